// The Legendre Memory Unit's linear memory m_t = Ā m_{t-1} + B̄ u_t (m_{-1} = 0), for a
// scalar input u per token, over activations laid out [N tokens, B, M] (token-major).
// Its impulse response is H[:, k] = Ā^k B̄, so m_t = sum_{k <= t} H[:, k] u_{t-k}.
//
// `memory_local`: the causal (Toeplitz) convolution inside chunks of `chunk` tokens:
//     m[t] = sum_{k <= t % chunk} H[:, k] u[t - k]   (the whole memory when chunk >= N)
//   with Hᵀ stored [h_cols, M] so neighbouring invocations read neighbouring columns.
// `memory_carry`: the state at the end of every chunk but the last, sequentially over
//   chunks: e_0 = local end of chunk 0, e_j = local end of chunk j + Ā^C e_{j-1}.
//   One workgroup per batch entry; M <= 2048.
// `memory_free`: adds the free response of the previous chunk's end state,
//   m[t] += Ā^{τ+1} e_{j-1} (t = j·C + τ, j >= 1), with (Ā^{τ+1})ᵀ stored [C, M, M].
// `memory_step`: one token for S streams, m_out = Ā m_in + B̄ u (a GEMV per stream).

#include "lib/common.wgsl"

struct Params {
    n: u32,
    b: u32,
    m: u32,
    chunk: u32,
    h_cols: u32,
    chunks: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// memory_local
@group(0) @binding(1) var<storage, read> lu: array<f32>;
@group(0) @binding(2) var<storage, read> ht: array<f32>;
@group(0) @binding(3) var<storage, read_write> lm: array<f32>;

@compute @workgroup_size(WG)
fn memory_local(ids: Ids, wg: Wg) {
    let idx = group_index(wg) * WG + ids.lid;
    if (idx >= p.n * p.b * p.m) {
        return;
    }
    let i = idx % p.m;
    let b = (idx / p.m) % p.b;
    let t = idx / (p.m * p.b);
    let tau = t % p.chunk;
    var acc = 0.0;
    for (var k = 0u; k <= tau; k += 1u) {
        acc += ht[k * p.m + i] * lu[(t - k) * p.b + b];
    }
    lm[idx] = acc;
}

// memory_carry
@group(0) @binding(1) var<storage, read> cm: array<f32>;
@group(0) @binding(2) var<storage, read> pt: array<f32>;
@group(0) @binding(3) var<storage, read_write> carry: array<f32>;

const MAX_M: u32 = 2048u;
const PER_THREAD: u32 = MAX_M / WG;
var<workgroup> ev: array<f32, MAX_M>;

@compute @workgroup_size(WG)
fn memory_carry(ids: Ids, wg: Wg) {
    let b = wg.wid.x;
    let end0 = ((p.chunk - 1u) * p.b + b) * p.m;
    for (var i = ids.lid; i < p.m; i += WG) {
        let v = cm[end0 + i];
        ev[i] = v;
        carry[b * p.m + i] = v;
    }
    workgroupBarrier();
    for (var j = 1u; j + 1u < p.chunks; j += 1u) {
        var nv: array<f32, PER_THREAD>;
        let end = (((j + 1u) * p.chunk - 1u) * p.b + b) * p.m;
        for (var r = 0u; r < PER_THREAD; r += 1u) {
            let i = ids.lid + r * WG;
            if (i < p.m) {
                var acc = 0.0;
                for (var l = 0u; l < p.m; l += 1u) {
                    acc += pt[l * p.m + i] * ev[l];
                }
                nv[r] = cm[end + i] + acc;
            }
        }
        workgroupBarrier();
        for (var r = 0u; r < PER_THREAD; r += 1u) {
            let i = ids.lid + r * WG;
            if (i < p.m) {
                ev[i] = nv[r];
                carry[(j * p.b + b) * p.m + i] = nv[r];
            }
        }
        workgroupBarrier();
    }
}

// memory_free
@group(0) @binding(1) var<storage, read> kt: array<f32>;
@group(0) @binding(2) var<storage, read> fe: array<f32>;
@group(0) @binding(3) var<storage, read_write> fm: array<f32>;

@compute @workgroup_size(WG)
fn memory_free(ids: Ids, wg: Wg) {
    let start = p.chunk * p.b * p.m;
    let idx = start + group_index(wg) * WG + ids.lid;
    if (idx >= p.n * p.b * p.m) {
        return;
    }
    let i = idx % p.m;
    let b = (idx / p.m) % p.b;
    let t = idx / (p.m * p.b);
    let j = t / p.chunk;
    let tau = t % p.chunk;
    let e0 = ((j - 1u) * p.b + b) * p.m;
    let k0 = tau * p.m * p.m;
    var acc = 0.0;
    for (var l = 0u; l < p.m; l += 1u) {
        acc += kt[k0 + l * p.m + i] * fe[e0 + l];
    }
    fm[idx] += acc;
}

// memory_step
@group(0) @binding(1) var<storage, read> at: array<f32>;
@group(0) @binding(2) var<storage, read> bv: array<f32>;
@group(0) @binding(3) var<storage, read> su: array<f32>;
@group(0) @binding(4) var<storage, read> m_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> m_out: array<f32>;

@compute @workgroup_size(WG)
fn memory_step(ids: Ids, wg: Wg) {
    let idx = group_index(wg) * WG + ids.lid;
    if (idx >= p.b * p.m) {
        return;
    }
    let i = idx % p.m;
    let s = idx / p.m;
    var acc = 0.0;
    for (var j = 0u; j < p.m; j += 1u) {
        acc += at[j * p.m + i] * m_in[s * p.m + j];
    }
    m_out[idx] = acc + bv[i] * su[s];
}
