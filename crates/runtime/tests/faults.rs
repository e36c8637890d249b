//! Faults that can be triggered on any device: a lost (destroyed) device, a poll time-out,
//! a GPU error inside a recording. Each is an error on the next call that names what was
//! attempted; nothing hangs or panics, and a new device works afterwards.

use std::time::Duration;

use spikescan_runtime::ops::elementwise::{self, Unary};
use spikescan_runtime::ops::matmul;
use spikescan_runtime::{Device, DeviceOptions, RuntimeError};

fn device() -> Device {
    Device::with_options(DeviceOptions::from_env()).unwrap()
}

fn lost(e: RuntimeError, what: &str) {
    let msg = e.to_string();
    assert!(
        matches!(e, RuntimeError::DeviceLost(_)) && msg.contains(what),
        "expected a lost device naming '{what}', got: {msg}"
    );
}

#[test]
fn a_destroyed_device_fails_every_call_with_device_lost_and_a_new_one_works() {
    let d = device();
    let x = d.tensor_f32(&[1.0, -2.0, 3.0], &[3]).unwrap();
    let mut cap = d.capture("graph").unwrap();
    let y = elementwise::relu(&mut cap, &x).unwrap();
    let g = cap.into_graph().unwrap();
    d.replay(&[&g], None).unwrap();
    assert_eq!(d.read_f32(&y).unwrap(), vec![1.0, 0.0, 3.0]);
    // A recording open when the device goes.
    let mut open = d.recorder("open across the loss");
    let _pending = elementwise::relu(&mut open, &x).unwrap();
    let out = d.alloc(&[3], spikescan_runtime::DType::F32).unwrap();

    d.destroy();
    assert!(d.is_lost());
    lost(d.tensor_f32(&[1.0], &[1]).unwrap_err(), "destroyed");
    lost(
        d.alloc(&[4], spikescan_runtime::DType::F32).unwrap_err(),
        "f32 tensor",
    );
    lost(d.read_f32(&x).unwrap_err(), "reading");
    lost(d.write_f32(&x, &[0.0; 3]).unwrap_err(), "writing");
    lost(d.replay(&[&g], None).unwrap_err(), "replaying");
    lost(d.wait("a wait").unwrap_err(), "a wait");
    lost(open.submit().unwrap_err(), "submitting");
    let mut rec = d.recorder("after the loss");
    lost(
        elementwise::unary_into(&mut rec, Unary::Relu, &x, &out).unwrap_err(),
        "recording a dispatch",
    );
    lost(rec.copy(&x, &out).unwrap_err(), "recording a copy");
    lost(rec.submit().unwrap_err(), "submitting");
    lost(d.capture("after").err().unwrap(), "starting a capture");
    lost(
        spikescan_runtime::ReadbackRing::new(&d, 16, 2)
            .err()
            .unwrap(),
        "readback ring",
    );
    // Tensors, graphs and the device itself drop without a panic.
    drop((g, y, x, out));

    let fresh = device();
    assert!(!fresh.is_lost());
    let a = fresh.tensor_f32(&[-1.0, 5.0], &[2]).unwrap();
    let mut rec = fresh.recorder("fresh");
    let b = elementwise::relu(&mut rec, &a).unwrap();
    rec.submit().unwrap();
    assert_eq!(fresh.read_f32(&b).unwrap(), vec![0.0, 5.0]);
}

#[test]
fn a_poll_time_out_is_an_error_and_the_device_keeps_working() {
    let d = Device::with_options(DeviceOptions {
        poll_timeout: Duration::ZERO,
        ..DeviceOptions::from_env()
    })
    .unwrap();
    assert_eq!(d.poll_timeout(), Duration::ZERO);
    // Seconds of work on lavapipe, far from done when the zero time-out is up (on a loaded
    // machine the first attempt can finish first; each retry doubles the work).
    let n = 1024;
    let ones = d.tensor_f32(&vec![1.0; n * n], &[n, n]).unwrap();
    let mut timed_out = None;
    for attempt in 0..4 {
        let mut rec = d.recorder("long");
        let mut c = matmul::linear(&mut rec, &ones, &ones, None).unwrap();
        for _ in 0..(1 << attempt) {
            let s = elementwise::scale(&mut rec, &c, 1.0 / n as f32).unwrap();
            c = matmul::linear(&mut rec, &s, &ones, None).unwrap();
        }
        rec.submit().unwrap();
        match d.read_f32(&c) {
            Err(e) => {
                assert!(
                    matches!(e, RuntimeError::Timeout { .. }) && e.to_string().contains("readback"),
                    "{e}"
                );
                timed_out = Some(c);
                break;
            }
            Ok(v) => assert!(v.iter().all(|&x| x == n as f32)),
        }
    }
    let c = timed_out.expect("a zero poll time-out times out");
    assert!(!d.is_lost());
    // The next call, with time to wait, gets the right result.
    d.set_poll_timeout(Duration::from_secs(300));
    let v = d.read_f32(&c).unwrap();
    assert!(v.iter().all(|&x| x == n as f32), "{:?}", &v[..4]);
}

#[test]
fn a_gpu_error_inside_a_recording_is_an_error_that_names_the_op() {
    let d = device();
    let x = d.tensor_f32(&[1.0; 64], &[64]).unwrap();
    let ok = d.tensor_f32(&[2.0; 64], &[64]).unwrap();
    // A buffer destroyed behind the runtime's back (an embedding app's mistake).
    x.buffer().destroy();
    let mut rec = d.recorder("faulty");
    let good = elementwise::relu(&mut rec, &ok).unwrap();
    let result = elementwise::silu(&mut rec, &x).and_then(|_| rec.submit());
    let e = result.unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(e, RuntimeError::Validation { .. }) && msg.contains("silu"),
        "the error names the op: {msg}"
    );
    drop(good);
    // The device is still usable.
    let mut rec = d.recorder("after");
    let y = elementwise::relu(&mut rec, &ok).unwrap();
    rec.submit().unwrap();
    assert_eq!(d.read_f32(&y).unwrap(), vec![2.0; 64]);
}
