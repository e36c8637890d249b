//! Runtime behaviour beyond single kernels: limits become errors, the pool reuses buffers,
//! a chain of ops records into one submit, profiling times every dispatch.

use spikescan_runtime::harness::test_devices;
use spikescan_runtime::ops::{elementwise, matmul, rms_norm};
use spikescan_runtime::{format_table, DType, Device, DeviceOptions, RuntimeError};

fn dev() -> &'static Device {
    &test_devices()[0].1
}

#[test]
fn a_buffer_over_the_binding_limit_is_an_error_that_names_the_limit() {
    let d = dev();
    let limit = d.limits().max_storage_buffer_binding_size as usize;
    let elems = limit / 4 + 1;
    let err = d.alloc(&[elems], DType::F32).unwrap_err();
    assert!(
        matches!(err, RuntimeError::BufferTooLarge { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("max_storage_buffer_binding_size") && msg.contains(&format!("{}", elems * 4)),
        "{msg}"
    );
    // The device is still usable afterwards.
    let t = d.tensor_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(d.read_f32(&t).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let d = dev();
    let x = d.tensor_f32(&[0.0; 6], &[2, 3]).unwrap();
    let w = d.weight_f32(&[0.0; 8], &[2, 4]).unwrap();
    let mut rec = d.recorder("bad");
    let e = matmul::linear(&mut rec, &x, &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
    let ids = d.tensor_u32(&[0, 1], &[2]).unwrap();
    let e = elementwise::relu(&mut rec, &ids).unwrap_err().to_string();
    assert!(e.contains("u32"), "{e}");
    let e = x.reshape(&[4]).unwrap_err().to_string();
    assert!(e.contains("[2, 3]"), "{e}");
}

#[test]
fn an_output_bound_twice_is_refused() {
    let d = dev();
    let x = d.tensor_f32(&[1.0, -1.0], &[2]).unwrap();
    let mut rec = d.recorder("alias");
    let e = elementwise::unary_into(&mut rec, elementwise::Unary::Relu, &x, &x)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares its buffer"), "{e}");
}

#[test]
fn dropped_activations_return_to_the_pool_and_are_reused() {
    let d = Device::with_options(DeviceOptions::from_env()).unwrap();
    assert_eq!(d.pooled_bytes(), 0);
    let a = d.alloc(&[1000], DType::F32).unwrap();
    let cap = a.capacity();
    drop(a);
    assert_eq!(d.pooled_bytes(), cap);
    let b = d.alloc(&[990], DType::F32).unwrap(); // same size class
    assert_eq!(d.pooled_bytes(), 0);
    drop(b);
    // Weights never enter the pool.
    let w = d.weight_f32(&[1.0; 1000], &[1000]).unwrap();
    drop(w);
    assert_eq!(d.pooled_bytes(), cap);
    d.trim_pool();
    assert_eq!(d.pooled_bytes(), 0);
}

#[test]
fn a_chain_of_ops_records_into_one_submit_and_computes_the_composition() {
    let d = dev();
    let (rows, k, n) = (3usize, 5usize, 4usize);
    let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.3).sin()).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).cos()).collect();
    let g = vec![1.0f32; n];
    let xt = d.tensor_f32(&x, &[rows, k]).unwrap();
    let wt = d.weight_f32(&w, &[n, k]).unwrap();
    let gt = d.weight_f32(&g, &[n]).unwrap();
    let mut rec = d.recorder("chain");
    let h = matmul::linear(&mut rec, &xt, &wt, None).unwrap();
    let h = elementwise::gelu(&mut rec, &h).unwrap();
    let y = rms_norm::rms_norm(&mut rec, &h, &gt, 1e-5).unwrap();
    assert_eq!(rec.dispatch_count(), 3);
    rec.submit().unwrap();
    let got = d.read_f32(&y).unwrap();
    let lin = matmul::reference(&matmul::Gemm::linear(rows, n, k), &x, &w, None);
    let act: Vec<f32> = lin
        .iter()
        .map(|&v| elementwise::Unary::Gelu.reference(v) as f32)
        .collect();
    let (want, _) = rms_norm::reference(&act, None, n, &g, 1e-5);
    for (a, b) in got.iter().zip(&want) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn profiling_times_every_dispatch_and_prints_a_table() {
    let d = Device::with_options(DeviceOptions {
        profile: true,
        ..DeviceOptions::from_env()
    })
    .unwrap();
    let x = d.tensor_f32(&vec![0.5; 4096], &[64, 64]).unwrap();
    let w = d.weight_f32(&vec![0.25; 4096], &[64, 64]).unwrap();
    let mut rec = d.recorder("profiled");
    let h = matmul::linear(&mut rec, &x, &w, None).unwrap();
    let _y = elementwise::relu(&mut rec, &h).unwrap();
    rec.submit().unwrap();
    let prof = d.take_profile();
    assert_eq!(prof.len(), 2, "{prof:?}");
    assert_eq!(prof[0].info.name, "matmul");
    assert_eq!(prof[1].info.name, "relu");
    assert!(prof.iter().all(|t| t.micros >= 0.0 && t.info.bytes > 0));
    assert_eq!(prof[0].gpu_timestamps, d.caps().timestamps);
    let table = format_table(&prof);
    assert!(
        table.contains("matmul") && table.contains("GB/s") && table.contains("total"),
        "{table}"
    );
    assert!(d.take_profile().is_empty());
}

#[test]
fn debug_mode_submits_per_op_and_still_computes() {
    let d = Device::with_options(DeviceOptions {
        debug: true,
        ..DeviceOptions::from_env()
    })
    .unwrap();
    let x = d.tensor_f32(&[-1.0, 2.0, -3.0], &[3]).unwrap();
    let mut rec = d.recorder("debug");
    let y = elementwise::relu(&mut rec, &x).unwrap();
    let z = elementwise::scale(&mut rec, &y, 2.0).unwrap();
    rec.submit().unwrap();
    assert_eq!(d.read_f32(&z).unwrap(), vec![0.0, 4.0, 0.0]);
}

#[test]
fn forcing_the_twins_turns_features_off() {
    let d = &test_devices()[1].1;
    assert!(!d.caps().f16 && !d.caps().subgroups);
    let w = d.weight_f16(&[1.0, 0.1], &[2]).unwrap();
    assert_eq!(w.dtype(), DType::F32);
    // Values still pass through f16 rounding, so both twins compute the same thing.
    assert_eq!(
        d.read_f32(&w).unwrap()[1],
        half::f16::from_f32(0.1).to_f32()
    );
}

#[test]
fn copies_land_at_their_offset_and_bad_ones_are_refused() {
    let d = dev();
    let a = d.tensor_f32(&[1.0, 2.0], &[2]).unwrap();
    let out = d.alloc(&[3, 2], DType::F32).unwrap();
    let mut rec = d.recorder("copy");
    for t in 0..3 {
        rec.copy_at(&a, &out, t * 8).unwrap();
    }
    assert!(rec.copy_at(&a, &a, 0).is_err());
    assert!(rec.copy_at(&a, &out, 2).is_err());
    assert!(rec.copy_at(&out, &a, 0).is_err());
    rec.submit().unwrap();
    assert_eq!(
        d.read_f32(&out).unwrap(),
        vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    );
}

#[test]
fn an_upload_never_overwrites_a_buffer_a_pending_recording_still_reads() {
    let d = Device::with_options(DeviceOptions::from_env()).unwrap();
    let mut rec = d.recorder("pending");
    // The input is dropped before the recording is submitted: its buffer goes back to the
    // pool, but a later upload must not land in it before the recorded op has read it.
    let y = {
        let x = d.tensor_f32(&[1.0, -2.0, 3.0], &[3]).unwrap();
        elementwise::relu(&mut rec, &x).unwrap()
    };
    let other = d.tensor_f32(&[7.0, 7.0, 7.0], &[3]).unwrap();
    rec.submit().unwrap();
    assert_eq!(d.read_f32(&y).unwrap(), vec![1.0, 0.0, 3.0]);
    assert_eq!(d.read_f32(&other).unwrap(), vec![7.0; 3]);
    // Once submitted, freed buffers serve uploads again: a decode loop does not grow the pool.
    drop((y, other));
    let settled = d.pooled_bytes();
    for step in 0..20 {
        let t = d.tensor_u32(&[step], &[1]).unwrap();
        let mut rec = d.recorder("step");
        let _ = elementwise::relu(&mut rec, &d.tensor_f32(&[step as f32], &[1]).unwrap()).unwrap();
        rec.submit().unwrap();
        drop(t);
    }
    assert!(
        d.pooled_bytes() <= settled + 2 * 256,
        "{} > {settled}",
        d.pooled_bytes()
    );
}

#[test]
fn webgpu_limits_request_the_defaults_and_no_optional_feature() {
    let d = Device::with_options(DeviceOptions {
        webgpu_limits: true,
        max_invocations: None,
        ..DeviceOptions::from_env()
    })
    .unwrap();
    assert_eq!(d.wg(), 256);
    let l = d.limits();
    assert_eq!(l.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(l.max_compute_workgroup_storage_size, 16 << 10);
    assert_eq!(l.max_compute_invocations_per_workgroup, 256);
    assert!(l.max_storage_buffer_binding_size <= 128 << 20);
    assert_eq!(d.caps(), spikescan_runtime::Caps::default());
    assert!(d.features().is_empty(), "{:?}", d.features());
    // Kernels run within them.
    let x = d.tensor_f32(&[-1.0, 2.0], &[2]).unwrap();
    let mut rec = d.recorder("webgpu");
    let y = elementwise::relu(&mut rec, &x).unwrap();
    rec.submit().unwrap();
    assert_eq!(d.read_f32(&y).unwrap(), vec![0.0, 2.0]);
}

#[test]
fn fewer_than_256_invocations_select_the_wg128_variants() {
    use spikescan_runtime::pipeline::PipelineKey;
    use spikescan_runtime::Shader;
    let d = Device::with_options(DeviceOptions {
        max_invocations: Some(200),
        ..DeviceOptions::from_env()
    })
    .unwrap();
    assert_eq!(d.wg(), 128);
    assert!(d.limits().max_compute_invocations_per_workgroup <= 200);
    let k = d
        .kernel(&PipelineKey::new(Shader::Matmul, "matmul", 3, 1))
        .unwrap();
    assert!(k.label().contains("WG128"), "{}", k.label());
    // The same GEMM (tiled: 5 rows) and GEMV (1 row) as on a 256-invocation device.
    let wide = dev();
    let mut rng = spikescan_runtime::harness::Rng::new(3);
    let (xv, wv) = (rng.vec(5 * 70, -1.0, 1.0), rng.vec(33 * 70, -1.0, 1.0));
    for rows in [1usize, 5] {
        let mut got = Vec::new();
        for dv in [&d, wide] {
            let x = dv.tensor_f32(&xv[..rows * 70], &[rows, 70]).unwrap();
            let w = dv.tensor_f32(&wv, &[33, 70]).unwrap();
            let mut rec = dv.recorder("wg");
            let y = matmul::linear(&mut rec, &x, &w, None).unwrap();
            rec.submit().unwrap();
            got.push(dv.read_f32(&y).unwrap());
        }
        assert_eq!(got[0], got[1], "rows = {rows}");
    }
    // Below 128 nothing runs: a clear error, not a failed pipeline later.
    let err = Device::with_options(DeviceOptions {
        max_invocations: Some(64),
        ..DeviceOptions::from_env()
    })
    .unwrap_err();
    assert!(err.to_string().contains("need 128"), "{err}");
}

/// A captured graph replays what a recording would run, in place: each replay reads what
/// the last one left (a running sum here), and the readback ring returns the results oldest
/// first while later replays are in flight. A capturing recorder cannot be submitted.
#[test]
fn graphs_replay_in_place_and_the_ring_reads_back_in_order() {
    use spikescan_runtime::ReadbackRing;
    let d = dev();
    let acc = d
        .alloc_in(&[5], DType::F32, spikescan_runtime::Residency::Owned)
        .unwrap();
    d.write_f32(&acc, &[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap();
    let one = d.tensor_f32(&[1.0; 5], &[5]).unwrap();
    let mut rec = d.capture("acc").unwrap();
    let sum = elementwise::add(&mut rec, &acc, &one).unwrap();
    rec.copy(&sum, &acc).unwrap();
    let g = rec.into_graph().unwrap();
    assert_eq!(g.dispatches(), 1);
    drop(sum);
    let mut ring = ReadbackRing::new(d, 20, 3).unwrap();
    let mut seen = Vec::new();
    for _ in 0..7 {
        if ring.in_flight() == 2 {
            seen.push(ring.take_oldest(d).unwrap().unwrap());
        }
        let cost = d.replay(&[&g], Some((&acc, &mut ring))).unwrap();
        assert_eq!((cost.dispatches, cost.submits, cost.copies), (1, 1, 2));
    }
    while let Some(b) = ring.take_oldest(d).unwrap() {
        seen.push(b);
    }
    let firsts: Vec<f32> = seen
        .iter()
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(firsts, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(d.read_f32(&acc).unwrap(), vec![7.0, 8.0, 9.0, 10.0, 11.0]);
    // A full ring is an error, not a hang.
    let mut small = ReadbackRing::new(d, 20, 1).unwrap();
    d.replay(&[&g], Some((&acc, &mut small))).unwrap();
    let e = d.replay(&[&g], Some((&acc, &mut small))).unwrap_err();
    assert!(e.to_string().contains("in flight"), "{e}");
    let mut rec = d.capture("x").unwrap();
    elementwise::relu(&mut rec, &one).unwrap();
    assert!(rec.submit().is_err());
}

#[test]
fn an_unknown_limit_set_is_an_error_that_names_it() {
    let err = match Device::with_options(DeviceOptions {
        bad_limits: Some("tiny".into()),
        ..DeviceOptions::default()
    }) {
        Ok(_) => panic!("an unknown SPIKESCAN_LIMITS is refused"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("SPIKESCAN_LIMITS='tiny'"), "{err}");
}
