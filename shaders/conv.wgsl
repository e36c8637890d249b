// Direct 2-D convolution, NCHW, weights [Cout, Cin / groups, KH, KW] as PyTorch: stride,
// padding, dilation and groups (depthwise when groups = Cin = Cout). Padding is zeros, or one
// value per input channel (`has_pad_values`: a BatchNorm-and-pad layer's border, BN(0)).
// Conv1d runs here with H = 1. One invocation per output element.

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

@compute @workgroup_size(256)
fn conv2d(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
    let total = p.n * p.cout * p.oh * p.ow;
    if (i >= total) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let co = (i / (p.ow * p.oh)) % p.cout;
    let b = i / (p.ow * p.oh * p.cout);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let g = co / cout_g;
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
