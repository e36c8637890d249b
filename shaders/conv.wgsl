// Direct 2-D convolution, NCHW, weights [Cout, Cin / groups, KH, KW] as PyTorch: stride,
// padding, dilation and groups (depthwise when groups = Cin = Cout). Padding is zeros, or one
// value per input channel (`has_pad_values`: a BatchNorm-and-pad layer's border, BN(0)).
// Conv1d runs here with H = 1. `spike_conv2d` is the same convolution over packed binary
// spikes [N, Cin, H * W] (32 positions per u32 word): a spike adds its weight. One invocation
// per output element.

#include "lib/common.wgsl"

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    groups: u32,
    has_bias: u32,
    has_pad_values: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> pad_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// (ox, oy, co, b) of output element i.
fn out_coords(i: u32) -> vec4<u32> {
    return vec4<u32>(i % p.ow, (i / p.ow) % p.oh, (i / (p.ow * p.oh)) % p.cout, i / (p.ow * p.oh * p.cout));
}

@compute @workgroup_size(WG)
fn conv2d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    let total = p.n * p.cout * p.oh * p.ow;
    if (i >= total) {
        return;
    }
    let o = out_coords(i);
    let ox = o.x;
    let oy = o.y;
    let co = o.z;
    let b = o.w;
    let cin_g = p.cin / p.groups;
    let g = co / (p.cout / p.groups);
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci += 1u) {
        let xc = (b * p.cin + g * cin_g + ci) * p.h;
        let wc = (co * cin_g + ci) * p.kh;
        var border = 0.0;
        if (p.has_pad_values != 0u) {
            border = pad_values[g * cin_g + ci];
        }
        for (var ky = 0u; ky < p.kh; ky += 1u) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            let wrow = (wc + ky) * p.kw;
            let row_in = iy >= 0 && iy < i32(p.h);
            for (var kx = 0u; kx < p.kw; kx += 1u) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                var v = border;
                if (row_in && ix >= 0 && ix < i32(p.w)) {
                    v = x[(xc + u32(iy)) * p.w + u32(ix)];
                } else if (p.has_pad_values == 0u) {
                    continue;
                }
                acc = fma(v, wt[wrow + kx], acc);
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[co];
    }
    out[i] = acc;
}

@group(0) @binding(1) var<storage, read> bits: array<u32>;
@group(0) @binding(2) var<storage, read> swt: array<f32>;
@group(0) @binding(3) var<storage, read> sbias: array<f32>;
@group(0) @binding(4) var<storage, read_write> sout: array<f32>;

@compute @workgroup_size(WG)
fn spike_conv2d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.n * p.cout * p.oh * p.ow) {
        return;
    }
    let o = out_coords(i);
    let cin_g = p.cin / p.groups;
    let g = o.z / (p.cout / p.groups);
    let words = (p.h * p.w + 31u) / 32u;
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci += 1u) {
        let row = (o.w * p.cin + g * cin_g + ci) * words;
        let wc = (o.z * cin_g + ci) * p.kh;
        for (var ky = 0u; ky < p.kh; ky += 1u) {
            let iy = i32(o.y * p.sh + ky * p.dh) - i32(p.ph);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx += 1u) {
                let ix = i32(o.x * p.sw + kx * p.dw) - i32(p.pw);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                let pos = u32(iy) * p.w + u32(ix);
                if (((bits[row + pos / 32u] >> (pos % 32u)) & 1u) != 0u) {
                    acc += swt[(wc + ky) * p.kw + kx];
                }
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += sbias[o.z];
    }
    sout[i] = acc;
}
