// Shared by every kernel: the invocation ids and workgroup-wide reductions.
// Every kernel runs 1-D workgroups of WG invocations: 256, or 128 in the WG128 variants
// chosen where the device allows fewer (Dawn's compatibility mode, some mobile GPUs).

// Tint (Dawn, browsers) needs the directive for subgroup builtins; naga rejects it, so only
// WGSL produced for Tint defines ENABLE_SUBGROUPS (`pipeline::Target::Tint`).
#ifdef SUBGROUPS
#ifdef ENABLE_SUBGROUPS
enable subgroups;
#endif
#endif

// The ids uniform across a workgroup, apart from the per-invocation ones: uniformity analysis
// (Tint's) takes a struct parameter as non-uniform when any member is, and a barrier after a
// `return` that depends on a non-uniform value is rejected. Kernels may return early on
// `group_index(wg)` before barriers; never on `Ids`.
struct Wg {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// Per-invocation ids.
struct Ids {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
#endif
}

#ifdef WG128
const WG: u32 = 128u;
#else
const WG: u32 = 256u;
#endif

// Linear workgroup index of a grid folded into (x, y) past 65,535 groups.
fn group_index(wg: Wg) -> u32 {
    return wg.wid.x + wg.wid.y * wg.nwg.x;
}

var<workgroup> red_scratch: array<f32, WG>;

// Sum of `v` over the workgroup, returned to every invocation. Must be called in uniform
// control flow. The subgroup variant sums within subgroups first.
fn block_sum(v: f32, ids: Ids) -> f32 {
#ifdef SUBGROUPS
    let s = subgroupAdd(v);
    if (ids.sg_lane == 0u) {
        red_scratch[ids.sg_id] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < ids.sg_count; i += 1u) {
        t += red_scratch[i];
    }
    workgroupBarrier();
    return t;
#else
    red_scratch[ids.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (ids.lid < s) {
            red_scratch[ids.lid] += red_scratch[ids.lid + s];
        }
        workgroupBarrier();
    }
    let t = red_scratch[0];
    workgroupBarrier();
    return t;
#endif
}
