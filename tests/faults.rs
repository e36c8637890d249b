//! A model on a device that is lost mid-session: the next call is an error that says so (no
//! hang, no panic), and the same model loaded on a new device gives the same results.

mod common;

use common::{device, fixture};
use spikescan::models::{Model, Sampling};

#[test]
fn generation_on_a_lost_device_is_an_error_and_a_new_device_resumes() {
    let load = |dev: &spikescan::Device| match Model::load(dev, fixture("mamba-hf-tied")).unwrap() {
        Model::Mamba(m) => m,
        _ => panic!("not a Mamba model"),
    };
    let dev = device();
    let m = load(&dev);
    let s = Sampling::default();
    let before = m.generate(&dev, &[1, 2, 3], 8, &s, |_| {}).unwrap();
    let mut decoder = m.start_generation(&dev, &[1, 2, 3], &s, Some(8)).unwrap();
    m.next_token(&dev, &mut decoder).unwrap();

    dev.destroy();
    let e = m.next_token(&dev, &mut decoder).unwrap_err().to_string();
    assert!(e.contains("lost"), "{e}");
    let e = m
        .generate(&dev, &[1, 2, 3], 8, &s, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("lost"), "{e}");
    let e = m.logits(&dev, &[1, 2, 3], 1).unwrap_err().to_string();
    assert!(e.contains("lost"), "{e}");
    drop((decoder, m));

    let fresh = device();
    let m = load(&fresh);
    assert_eq!(
        m.generate(&fresh, &[1, 2, 3], 8, &s, |_| {}).unwrap(),
        before
    );
}
