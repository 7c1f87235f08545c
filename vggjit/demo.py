"""`vggjit demo`: style transfer end to end on images drawn here, offline, in about a minute.

Both demo images are generated procedurally at run time by this module (no files are
downloaded or bundled; they are the project's own work, free to use):

* :func:`content_image`: a house with a red roof, a door and windows, a tree, a sun and green
  hills under a blue sky, drawn with Pillow's ImageDraw.
* :func:`style_image`: a colourful swirl texture (colour bands wound around a few vortices,
  with brush-like streaks), computed with numpy from a fixed palette and a seeded generator.

With ImageNet weights present the demo runs style transfer's defaults (normalised terms, beta
50, total variation, max pooling). Without them it uses random He-normal weights, which carry
no knowledge of objects: the result shows texture transfer only. The demo then keeps a loss of
its own, whatever the defaults: normalised terms (random networks' layers differ in scale by
orders of magnitude), alpha 1, beta 500, no total variation, and average pooling; the random-
weight pictures of docs/style-transfer.md are made with it.
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import OutputExistsError, VggjitError

# numpy and Pillow are imported inside the functions: `vggjit --help` imports this module.

#: The demo's size (longer side) and L-BFGS steps: the whole demo, first JIT compile
#: included, stays under two minutes on a 2-core machine.
DEMO_SIZE = 192
DEMO_ITERATIONS = 30
DEMO_SAVE_EVERY = 10
RANDOM_NOTE = ("note: no ImageNet weights found; using random VGG19 weights, so the result "
               "shows texture transfer only (get the real ones with `vggjit weights fetch`)")


def content_image(width: int = 384, height: int = 288):
    """A simple landscape: sky, sun, hills, a house and a tree (PIL RGB image)."""
    import numpy as np
    from PIL import Image, ImageDraw

    s = width / 384.0
    yy = np.linspace(0, 1, height)[:, None, None]
    sky = (np.array([70, 130, 220]) * (1 - yy) + np.array([190, 225, 250]) * yy)
    img = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)

    def box(x0, y0, x1, y1):
        return [round(x0 * s), round(y0 * s), round(x1 * s), round(y1 * s)]

    d.ellipse(box(300, 26, 356, 82), fill=(255, 214, 40))  # sun
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        cx, cy = 328 * s, 54 * s
        d.line([cx + 36 * s * np.cos(angle), cy + 36 * s * np.sin(angle),
                cx + 50 * s * np.cos(angle), cy + 50 * s * np.sin(angle)],
               fill=(255, 200, 30), width=max(1, round(4 * s)))
    d.ellipse(box(-120, 180, 260, 420), fill=(70, 160, 60))  # hills
    d.ellipse(box(150, 195, 520, 430), fill=(50, 135, 50))
    d.rectangle(box(0, 250, 384, 288), fill=(60, 145, 55))
    d.rectangle(box(110, 150, 250, 250), fill=(235, 225, 200), outline=(90, 60, 40),
                width=max(1, round(3 * s)))  # house
    d.polygon([(round(96 * s), round(152 * s)), (round(180 * s), round(88 * s)),
               (round(264 * s), round(152 * s))], fill=(190, 40, 35))  # roof
    d.rectangle(box(162, 196, 194, 250), fill=(110, 65, 35))  # door
    for x0 in (124, 208):
        d.rectangle(box(x0, 168, x0 + 28, 192), fill=(120, 190, 240), outline=(255, 255, 255),
                    width=max(1, round(3 * s)))
    d.rectangle(box(300, 175, 314, 255), fill=(100, 65, 30))  # tree
    d.ellipse(box(270, 110, 344, 190), fill=(30, 110, 40))
    return img


#: The style's palette: deep blue, blue, cyan, pale yellow, orange, crimson (position, RGB).
PALETTE = ((0.0, (20, 30, 110)), (0.22, (40, 90, 200)), (0.42, (60, 190, 220)),
           (0.6, (250, 235, 130)), (0.8, (245, 140, 30)), (1.0, (190, 30, 60)))


def style_image(size: int = 256, seed: int = 3):
    """A colourful swirl texture (PIL RGB, size x size): contour bands of a stream function made
    of a few vortices and waves, coloured through :data:`PALETTE`, with brush-like streaks."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    psi = 0.6 * np.sin(7 * xx + 3 * np.sin(5 * yy)) + 0.4 * np.cos(6 * yy - 2 * xx)
    for _ in range(6):  # vortices: bands wind around each centre
        cx, cy = rng.uniform(0.05, 0.95, 2)
        sigma = rng.uniform(0.08, 0.18)
        psi += rng.choice([-1.5, 1.5]) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / sigma ** 2)
    t = 0.5 + 0.5 * np.sin(5 * psi)  # the colour along the bands
    stroke = 0.5 + 0.5 * np.sin(40 * psi + 2 * np.sin(30 * xx))  # fine brush strokes
    positions = [p for p, _ in PALETTE]
    rgb = np.stack([np.interp(t, positions, [c[i] for _, c in PALETTE]) for i in range(3)], -1)
    rgb *= (0.75 + 0.35 * stroke)[..., None]
    noise = Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L")
    grain = np.asarray(noise.filter(ImageFilter.GaussianBlur(1.0)), np.float64)[..., None]
    rgb *= 0.85 + 0.3 * grain / 255
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def demo_files(out: Path, iterations: int, save_every: int) -> list[Path]:
    names = ["content.png", "style.png", "result.png", "result.log.json", "result.loss.png",
             "result.ckpt.npz"]
    names += [f"result_{k:04d}.png" for k in range(save_every, iterations + 1, save_every)]
    return [out / name for name in names]


def run_demo(output="output", *, weights=None, driver=None, size: int = DEMO_SIZE,
             iterations: int = DEMO_ITERATIONS, save_every: int = DEMO_SAVE_EVERY,
             overwrite: bool = False, progress: bool = True, log=print):
    """Draw the images, pick the weights, stylise, write everything under ``output``."""
    from .contract import BACKWARD
    from .fileio import check_writable
    from .images import save_image
    from .registry import get_driver
    from .style import StyleTransfer, make_settings
    from .weights import find_weights

    out = Path(output)
    if not overwrite:
        existing = [p for p in demo_files(out, iterations, save_every) if p.exists()]
        if existing:
            raise OutputExistsError(f"{out}/ already holds demo results ({existing[0].name}, ...); "
                                    f"pass --overwrite to replace them or --output DIR")
    check_writable(out / "result.png", overwrite=True)
    try:
        path = find_weights(weights)
    except VggjitError:
        if weights:  # a file the user named must exist
            raise
        path = None
    if path is None:
        log(RANDOM_NOTE)
        options = dict(weights="random", normalize=True, pooling="avg", alpha=1.0, beta=500.0,
                       tv_weight=0.0)
    else:
        options = dict(weights=str(path))
    settings = make_settings(optimizer="lbfgs", iterations=iterations, size=size,
                             init="content", save_every=save_every, print_every=save_every,
                             driver=driver, **options)
    # Every kernel now, before the first image: on a cold cache numba-cpu compiles them on two
    # processes at once (its warmup.py), sooner than one by one on first use; warm, it loads
    # them in a fraction of a second.
    get_driver(settings.driver, require={BACKWARD}).warmup()   # the driver the run takes
    content, style = content_image(), style_image()
    save_image(content, out / "content.png")
    save_image(style, out / "style.png")
    start = time.perf_counter()
    transfer = StyleTransfer(style, settings=settings)
    session = transfer.start(content, output=out / "result.png", overwrite=True,
                             progress=progress, log=log)
    net = transfer.net
    log(f"vggjit demo: {session.content_rgb.shape[1]}x{session.content_rgb.shape[0]} px, "
        f"L-BFGS x {iterations}, {net.source}, driver {net.driver.name}")
    result = session.run()
    result.settings["demo_seconds"] = round(time.perf_counter() - start, 2)
    return result
