"""The Winograd tile transforms as LLVM IR on vectors of tiles: for F(4x4, 3x3) the split of
input rows into column phases, the input transform B^T d B and the output transform A^T m A;
for F(2x2, 3x3) the input transform read straight from the image and the output transform
(winograd4.py and winograd.py have the matrices and the layouts).

Why IR: written as Numba loops the transforms took 1-6 ns per pixel and channel, as long as the
products on the deep layers and twice as long on 64 channels. The loops were short (one row of
one channel, 7-57 elements), and each had to keep to a few load streams for LLVM to vectorise
it, so the intermediate rows went through memory; LLVM also chose 8-float vectors on AVX-512,
and float literals made some of the arithmetic float64. Here one loop step takes the inputs of
LANES tiles at once (or their products), keeps the intermediate rows in registers and stores
only the results, with masked loads and stores for the padding and the edges
(docs/design-notes.md, note 19, has the figures).

Each builder defines its LLVM function once per module (the loop skeleton is vector_ir.Loop);
the intrinsics at the end call it from Numba code with addresses (uint64) and counts (int64).
"""
from __future__ import annotations

from llvmlite import ir

from .vector_ir import ADDR, BVEC, FLOAT, INT, LANES, VEC, Loop, intrinsic_call


class _Loop(Loop):
    """Loop with the Winograd transforms' arithmetic."""

    def bt(self, x: list) -> list:
        """B^T applied to six vectors x0..x5 (winograd4.BT, its rows factored)."""
        add, sub, scale = self.add, self.sub, self.scale
        d42 = sub(x[4], x[2])
        return [sub(add(x[0], scale(4.0, x[4])), scale(5.0, x[2])),
                sub(scale(4.0, add(x[3], x[4])), add(x[1], x[2])),
                add(scale(4.0, sub(x[4], x[3])), sub(x[1], x[2])),
                add(scale(2.0, sub(x[3], x[1])), scale(4.0, d42)),
                add(scale(2.0, sub(x[1], x[3])), scale(4.0, d42)),
                sub(add(x[1], scale(4.0, x[5])), scale(5.0, x[3]))]

    def bt2(self, x: list) -> list:
        """F(2x2)'s B^T applied to four vectors (winograd.py's B^T)."""
        return [self.sub(x[0], x[2]), self.add(x[1], x[2]), self.sub(x[2], x[1]),
                self.sub(x[1], x[3])]

    def at2(self, x: list) -> list:
        """F(2x2)'s A^T applied to four vectors."""
        return [self.add(self.add(x[0], x[1]), x[2]), self.sub(self.sub(x[1], x[2]), x[3])]

    def at(self, x: list) -> list:
        """A^T applied to six vectors x0..x5 (winograd4.AT)."""
        add, sub, scale = self.add, self.sub, self.scale
        s12, d12 = add(x[1], x[2]), sub(x[1], x[2])
        s34, d34 = add(x[3], x[4]), sub(x[3], x[4])
        return [add(add(x[0], s12), s34), add(d12, scale(0.5, d34)),
                add(s12, scale(0.25, s34)), add(add(d12, scale(0.125, d34)), x[5])]


def _define_split(module: ir.Module, masked: bool) -> ir.Function:
    """split(src, gate, width, dst, stride, count): one input row split into its column
    phases, for k < count and p < 4:

        dst[p*stride + k] = src[4k + p - 1]  where 0 <= 4k + p - 1 < width (and, when
                                             ``masked``, gate[4k + p - 1] > 0), else 0

    (the row's padded column 4k + p; src and gate: addresses of the row's column 0)."""
    loop = _Loop(module, "vggjit_f4_split" + ("_gated" if masked else ""), 6)
    if loop.defined:
        return loop.fn
    src_a, gate_a, width, dst_a, stride, count = loop.args
    b = loop.b
    src, gate, dst = loop.pointer(src_a), loop.pointer(gate_a), loop.pointer(dst_a)
    k = loop.start(count)
    col0 = b.sub(b.mul(k, loop.i64(4)), loop.i64(1))
    columns = []                                 # 64 consecutive padded columns
    for i in range(4):
        col = b.add(col0, loop.i64(LANES * i))
        columns.append(loop.load_gated(src, gate, col, loop.within(col, width), masked))
    keep = loop.below(k, count)
    for p in range(4):
        every4 = [p + 4 * m for m in range(LANES // 2)]
        phase = loop.shuffle(loop.shuffle(columns[0], columns[1], every4),
                             loop.shuffle(columns[2], columns[3], every4), list(range(LANES)))
        loop.store(phase, dst, b.add(b.mul(stride, loop.i64(p)), k), keep)
    return loop.finish()


def _define_input(module: ir.Module) -> ir.Function:
    """input(rb, row, phase, v, plane, count): V[6i + j] = (B^T d B)[i, j] of tiles t < count,
    at v[(6i + j)*plane + t], from the phase rows of their 6 input rows: d[a, c] at
    rb[a*row + c*phase + t] for c < 4, rb[a*row + (c - 4)*phase + t + 1] for c = 4, 5."""
    loop = _Loop(module, "vggjit_f4_input", 6)
    if loop.defined:
        return loop.fn
    rb_a, row, phase, v_a, plane, count = loop.args
    b = loop.b
    rb, v = loop.pointer(rb_a), loop.pointer(v_a)
    t = loop.start(count)
    keep = loop.below(t, count)
    # columns[c][a] = d[a, c]; B^T along a, then along c
    columns = [[loop.load(rb, b.add(b.add(b.mul(row, loop.i64(a)),
                                          b.mul(phase, loop.i64(c % 4))),
                                    b.add(t, loop.i64(c // 4))), keep)
                for a in range(6)] for c in range(6)]
    rows = [loop.bt(column) for column in columns]            # rows[c][i] = (B^T d)[i, c]
    for i in range(6):
        for j, value in enumerate(loop.bt([rows[c][i] for c in range(6)])):
            loop.store(value, v, b.add(b.mul(plane, loop.i64(6 * i + j)), t), keep)
    return loop.finish()


def _define_output(module: ir.Module, size: int) -> ir.Function:
    """output(m, plane, y, width, height, tiles, bias, floor): the output transform of F(4x4)
    (size 4, A^T of winograd4.py) or F(2x2) (size 2, winograd.py's) for one tile row of one
    output channel, tj < tiles:

        y[i*width + size*tj + jj] = max(floor, (A^T m A)[i, jj] + bias)  for i < height (at
                                    most size), size*tj + jj < width; NaN stays NaN

    with M[e] of tile tj at m[e*plane + tj], e < (size + 2)^2."""
    loop = _Loop(module, f"vggjit_f{size}_output", 6, floats=2)
    if loop.defined:
        return loop.fn
    at = loop.at if size == 4 else loop.at2
    r = size + 2
    m_a, plane, y_a, width, height, tiles, bias, floor = loop.args
    b = loop.b
    m, y = loop.pointer(m_a), loop.pointer(y_a)
    bias_v, floor_v = loop.splat(bias, VEC), loop.splat(floor, VEC)
    t = loop.start(tiles)
    keep = loop.below(t, tiles)
    products = [loop.load(m, b.add(b.mul(plane, loop.i64(e)), t), keep) for e in range(r * r)]
    columns = [at([products[r * a + j] for a in range(r)]) for j in range(r)]
    col0 = b.mul(t, loop.i64(size))
    for i in range(size):
        outs = [loop.clamp(value, bias_v, floor_v)
                for value in at([columns[j][i] for j in range(r)])]
        inside = loop.splat(b.icmp_signed("<", loop.i64(i), height), BVEC)
        loop.store_interleaved(outs, b.gep(y, [b.mul(width, loop.i64(i))]), col0, width,
                               inside)
    return loop.finish()


def _define_input2(module: ir.Module, masked: bool) -> ir.Function:
    """input2(x, gate, top, height, width, v, plane, tiles): F(2x2)'s V[4i + j] = (B^T d B)[i,
    j] of one tile row of one channel, tiles tj < tiles, at v[(4i + j)*plane + tj], read
    straight from the channel's plane x (rows top .. top + 3, zero outside [0, height); tile
    tj's columns 2tj - 1 .. 2tj + 2, zero outside [0, width); when ``masked``, zero also
    where gate <= 0 or NaN)."""
    loop = _Loop(module, "vggjit_f2_input" + ("_gated" if masked else ""), 8)
    if loop.defined:
        return loop.fn
    x_a, gate_a, top, height, width, v_a, plane, tiles = loop.args
    b = loop.b
    x, gate, v = loop.pointer(x_a), loop.pointer(gate_a), loop.pointer(v_a)
    t = loop.start(tiles)
    keep = loop.below(t, tiles)
    evens = list(range(0, 2 * LANES, 2))
    odds = list(range(1, 2 * LANES, 2))
    columns = [[], [], [], []]             # columns[c][a]: E[t], O[t], E[t + 1], O[t + 1]
    for a in range(4):
        row = b.add(top, loop.i64(a))
        row_ok = b.and_(b.icmp_signed(">=", row, loop.i64(0)),
                        b.icmp_signed("<", row, height))
        row_ok = loop.splat(row_ok, BVEC)
        col0 = b.sub(b.mul(t, loop.i64(2)), loop.i64(1))
        start = b.add(b.mul(row, width), col0)
        pairs = []
        for shift in (0, 2):               # columns 2t - 1 + shift .. + 2*LANES
            halves = []
            for h in range(2):
                col = b.add(col0, loop.i64(shift + LANES * h))
                inside = b.and_(loop.within(col, width), row_ok)
                halves.append(loop.load_gated(x, gate, b.add(start, loop.i64(shift + LANES * h)),
                                              inside, masked))
            pairs.append(halves)
        for c, (shift, picks) in enumerate(((0, evens), (0, odds), (1, evens), (1, odds))):
            columns[c].append(loop.shuffle(pairs[shift][0], pairs[shift][1], picks))
    rows = [loop.bt2(column) for column in columns]          # rows[c][i] = (B^T d)[i, c]
    for i in range(4):
        for j, value in enumerate(loop.bt2([rows[c][i] for c in range(4)])):
            loop.store(value, v, b.add(b.mul(plane, loop.i64(4 * i + j)), t), keep)
    return loop.finish()


#: split_row(src, gate, width, dst, stride, count): see _define_split (gate unused)
split_row = intrinsic_call(lambda module: _define_split(module, False),
                           [ADDR, ADDR, INT, ADDR, INT, INT])
#: split_row_gated(...): the same, x read as 0 where gate <= 0 or NaN (the ReLU backward)
split_row_gated = intrinsic_call(lambda module: _define_split(module, True),
                                 [ADDR, ADDR, INT, ADDR, INT, INT])
#: input_tiles(rb, row, phase, v, plane, count): see _define_input
input_tiles = intrinsic_call(_define_input, [ADDR, INT, INT, ADDR, INT, INT])
#: output_tiles(m, plane, y, width, height, tiles, bias, floor): see _define_output
output_tiles = intrinsic_call(lambda module: _define_output(module, 4),
                              [ADDR, INT, ADDR, INT, INT, INT, FLOAT, FLOAT])
#: input2_tiles(x, gate, top, height, width, v, plane, tiles): see _define_input2 (gate unused)
input2_tiles = intrinsic_call(lambda module: _define_input2(module, False),
                              [ADDR, ADDR, INT, INT, INT, ADDR, INT, INT])
#: input2_tiles_gated(...): the same, x read as 0 where gate <= 0 or NaN (the ReLU backward)
input2_tiles_gated = intrinsic_call(lambda module: _define_input2(module, True),
                                    [ADDR, ADDR, INT, INT, INT, ADDR, INT, INT])
#: output2_tiles(m, plane, y, width, height, tiles, bias, floor): see _define_output
output2_tiles = intrinsic_call(lambda module: _define_output(module, 2),
                               [ADDR, INT, ADDR, INT, INT, INT, FLOAT, FLOAT])
