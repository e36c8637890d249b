//! The facade crate: what an embedding app sees.

use spikescan::ops::{elementwise, matmul};
use spikescan::{DType, Device, DeviceOptions};

#[test]
fn an_app_can_open_a_device_upload_run_and_read_back() {
    let dev = Device::with_options(DeviceOptions::from_env())
        .expect("a GPU adapter (install mesa-vulkan-drivers)");
    let x = dev.tensor_f32(&[1.0, -2.0, 3.0, -4.0], &[2, 2]).unwrap();
    let w = dev.weight_f32(&[1.0, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let b = dev.weight_f32(&[0.5, 0.5], &[2]).unwrap();
    let mut rec = dev.recorder("facade");
    let y = matmul::linear(&mut rec, &x, &w, Some(&b)).unwrap();
    let y = elementwise::relu(&mut rec, &y).unwrap();
    rec.submit().unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(dev.read_f32(&y).unwrap(), vec![1.5, 0.0, 3.5, 0.0]);
}

#[test]
fn devices_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Device>();
    assert_send_sync::<spikescan::Tensor>();
    // Loaded models are shared read-only between threads; sessions and states move to one.
    assert_send_sync::<spikescan::models::Model>();
    fn assert_send<T: Send>() {}
    assert_send::<spikescan::models::LmuStream<'static>>();
    assert_send::<spikescan::models::MambaState>();
    let dev = Device::with_options(DeviceOptions::from_env()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let x = dev.tensor_f32(&[i as f32; 8], &[8]).unwrap();
                let mut rec = dev.recorder("thread");
                let y = elementwise::scale(&mut rec, &x, 2.0).unwrap();
                rec.submit().unwrap();
                dev.read_f32(&y).unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), vec![2.0 * i as f32; 8]);
    }
}
