// Mean over one axis of a tensor viewed as [outer, axis, inner] -> [outer, inner].
// One invocation per output; consecutive invocations read consecutive `inner` elements.

#include "lib/common.wgsl"

struct Params {
    outer: u32,
    axis: u32,
    inner: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn mean_axis(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.outer * p.inner) {
        return;
    }
    let o = i / p.inner;
    let j = i % p.inner;
    var s = 0.0;
    for (var a = 0u; a < p.axis; a += 1u) {
        s += x[(o * p.axis + a) * p.inner + j];
    }
    out[i] = s / f32(p.axis);
}
