"""`vggjit weights`: fetch, inspect and convert the VGG19 weight file."""
from __future__ import annotations

import argparse

from . import subcommand

DESCRIPTION = """\
VGG19's ImageNet weights come from MatConvNet's imagenet-vgg-verydeep-19.mat (about 510 MB).

  vggjit weights fetch            download it (resumable, MD5-checked) into the cache directory
  vggjit weights info [PATH]      what a weight file holds: format, layers and shapes, mean pixel
  vggjit weights convert PATH     write vggjit's fast-loading copy of a .mat
  vggjit weights verify [PATH]    check a file against its checksums (and a .mat's cache)

Where vggjit looks for the file: --weights PATH, then $VGGJIT_WEIGHTS, then
$VGGJIT_HOME/imagenet-vgg-verydeep-19.mat ($VGGJIT_HOME defaults to ~/.cache/vggjit).
The first load of a .mat converts it once (some seconds) to $VGGJIT_HOME/converted/; later loads
map that copy in well under a second."""


def register(subparsers) -> None:
    parser = subcommand(subparsers, "weights", help="download, inspect or convert the weight file",
                        description=DESCRIPTION, run=lambda args: parser.print_help() or 0)
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")

    from ..weights_urls import DEFAULT_VARIANT, DESCRIPTIONS, MD5S, URLS

    variants = "\n".join(f"  {name:7} {DESCRIPTIONS[name]}\n          {URLS[name]}\n"
                         f"          MD5 {MD5S[name]}" for name in URLS)
    fetch = sub.add_parser(
        "fetch", help="download the official VGG19 file", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the official MatConvNet VGG19 file with a progress bar, resume an "
                    "interrupted download\n(HTTP Range; the partial file is <target>.part), "
                    "check its MD5, move it into place only\nwhen complete, and convert it to "
                    "the fast-loading cache.\n\nvariants:\n" + variants,
        epilog="examples:\n  vggjit weights fetch\n  vggjit weights fetch --variant new\n"
               "  vggjit weights fetch --url http://mirror.example/imagenet-vgg-verydeep-19.mat")
    fetch.add_argument("--variant", choices=sorted(URLS), default=DEFAULT_VARIANT,
                       help=f"which file (default: {DEFAULT_VARIANT}, the lab's)")
    fetch.add_argument("--url", help="download from this address instead (a mirror); the "
                                     "variant's MD5 is still checked")
    fetch.add_argument("--md5", help="expected MD5 (default: the variant's official one)")
    fetch.add_argument("--output", metavar="PATH",
                       help="where to put the file (default: "
                            "$VGGJIT_HOME/imagenet-vgg-verydeep-19.mat)")
    fetch.add_argument("--force", action="store_true",
                       help="replace an existing file whose checksum differs")
    fetch.add_argument("--no-convert", action="store_true",
                       help="do not build the fast-loading cache now")
    fetch.set_defaults(run=run_fetch)

    info = sub.add_parser(
        "info", help="show what a weight file holds", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the format found (older/newer MatConvNet or vggjit's own), the "
                    "network, every layer's\nweight and bias shapes, the mean pixel, the "
                    "classes and the file's MD5 (and whether it is\nan official download).")
    info.add_argument("path", nargs="?", metavar="PATH",
                      help="weight file (default: the one vggjit would use)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    convert = sub.add_parser(
        "convert", help="write the fast-loading copy of a .mat", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a MatConvNet .mat to vggjit's native file (an uncompressed .npz "
                    "that loads by\nmemory-mapping). Without --output it goes to the cache "
                    "directory, where loading the .mat\nfinds it; with --output you get a "
                    "standalone file to pass to --weights.")
    convert.add_argument("path", metavar="PATH", help="the .mat file")
    convert.add_argument("--output", metavar="OUT", help="write a standalone .npz here")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(run=run_convert)

    verify = sub.add_parser(
        "verify", help="check a weight file (and its cache) against its checksums",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a weight file in full and check it. A vggjit native .npz: every "
                    "member against the\nCRC-32 recorded when it was written (loading does "
                    "this too, whenever the file changed\nsince its last check). A .mat: its "
                    "MD5 against the official downloads, then its cache in\n"
                    "$VGGJIT_HOME/converted/ if there is one. Exit status 2 if anything "
                    "fails.",
        epilog="examples:\n  vggjit weights verify\n  vggjit weights verify vgg19.npz")
    verify.add_argument("path", nargs="?", metavar="PATH",
                        help="weight file (default: the one vggjit would use)")
    verify.set_defaults(run=run_verify)


def run_fetch(args) -> int:
    from ..download import fetch_weights
    from ..weights import load_weights

    path = fetch_weights(args.variant, url=args.url, md5=args.md5, output=args.output,
                         overwrite=args.force, convert=False)
    print(f"weights: {path} (MD5 verified)")
    if not args.no_convert:
        print("converting to the fast-loading cache (once) ...", flush=True)
        ws = load_weights(path)
        print(f"cache: {ws.cache}" if ws.cache else "cache: not written (see the warning)")
    return 0


def run_info(args) -> int:
    import json

    from ..weights import VERSION_NAMES, file_md5, find_weights, load_weights, official_variant

    path = find_weights(args.path)
    ws = load_weights(path)
    is_native = ws.cache is not None and ws.cache.resolve() == path.resolve()
    md5 = file_md5(path) if is_native else ws.md5  # a .mat's MD5 is recorded in its cache
    official = official_variant(ws.md5)  # of the .mat, or of the one a native file came from
    shapes = []
    for layer in ws.layers:
        w, b = ws.params[layer.name] if layer.has_params else (None, None)
        shapes.append((layer.name, layer.kind, None if w is None else list(w.shape),
                       None if b is None else list(b.shape)))
    if args.json:
        print(json.dumps({
            "path": str(path), "format": "vggjit-native" if is_native else ws.version,
            "converted_from": ws.version if is_native else None, "network": ws.name,
            "md5": md5, "source_md5": ws.md5, "official": official,
            "source": ws.source, "cache": str(ws.cache) if ws.cache else None,
            "mean_pixel": [float(v) for v in ws.mean_pixel], "classes": len(ws.wnids),
            "layers": [{"name": n, "type": k, "weight": w, "bias": b} for n, k, w, b in shapes],
            "notes": ws.notes}, indent=2))
        return 0
    print(f"file:       {path}")
    if is_native:
        print(f"format:     vggjit native file (converted from "
              f"{VERSION_NAMES.get(ws.version, ws.version)})")
        print(f"source:     {ws.source} (MD5 {ws.md5 or 'unknown'})")
    else:
        print(f"format:     {VERSION_NAMES.get(ws.version, ws.version)}")
        print(f"cache:      {ws.cache or 'none'}")
    print(f"MD5:        {md5}" + (f" (official {official} download)" if official and not is_native
                                  else ""))
    if official and is_native:
        print(f"            the source was the official {official} download")
    total = sum(w.size + b.size for w, b in ws.params.values())
    print(f"network:    {ws.name}, {len(ws.layers)} layers, {total:,} parameters")
    print(f"mean pixel: R {ws.mean_pixel[0]:.3f}  G {ws.mean_pixel[1]:.3f}  "
          f"B {ws.mean_pixel[2]:.3f}")
    if ws.wnids:
        print(f"classes:    {len(ws.wnids)} ({ws.wnids[0]} {ws.descriptions[0]!r} ... "
              f"{ws.wnids[-1]} {ws.descriptions[-1]!r})")
    else:
        print("classes:    no names")
    for note in ws.notes:
        print(f"note:       {note}")
    print()
    print(f"  {'layer':8} {'type':8} {'weight (vggjit layout)':24} bias")
    for name, kind, w, b in shapes:
        wtext = "x".join(map(str, w)) if w else ""
        btext = "x".join(map(str, b)) if b else ""
        print(f"  {name:8} {kind:8} {wtext:24} {btext}")
    return 0


def run_convert(args) -> int:
    from pathlib import Path

    from ..fileio import check_writable, refuse_input_as_output
    from ..weights import load_weights, write_native

    if args.output:
        refuse_input_as_output(args.output, [args.path], "--output")
        out = check_writable(Path(args.output), overwrite=args.overwrite)
        ws = load_weights(args.path, cache=False)
        write_native(out, ws, source_stat=Path(args.path).stat(), overwrite=args.overwrite)
        print(f"wrote {out} ({ws.name}); use it with --weights {out}")
    else:
        ws = load_weights(args.path)
        print(f"cache: {ws.cache} ({ws.name})" if ws.cache
              else "cache: not written (see the warning)")
    return 0


def run_verify(args) -> int:
    from .. import weightcheck
    from ..weights import cache_path_for, file_md5, find_weights, official_variant

    path = find_weights(args.path)
    with open(path, "rb") as handle:
        native = handle.read(4) == b"PK\x03\x04"
    if native:
        checked = weightcheck.verify(path)
        weightcheck.remember(path)
        print(f"{path}: vggjit native file; every member matches its recorded CRC-32 "
              f"({checked / 2**20:.1f} MiB checked)")
        return 0
    md5 = file_md5(path)
    variant = official_variant(md5)
    print(f"{path}: MD5 {md5}: " + (f"the official {variant} download" if variant
                                    else "not an official download (no known MD5)"))
    cache = cache_path_for(path)
    if cache.is_file():
        weightcheck.verify(cache)
        weightcheck.remember(cache)
        print(f"cache {cache}: every member matches its recorded CRC-32")
    else:
        print("cache: none yet (the first load writes it)")
    return 0
