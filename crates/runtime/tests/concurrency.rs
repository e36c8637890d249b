//! Recordings open at the same time on one device (several threads, nested recordings, a
//! capture beside a recording): the pool never hands one of them a buffer another's pending
//! work still uses, and still reuses buffers within a recording.
//!
//! Each device here is private to its test, so the resource counts are exact.

use std::sync::mpsc;

use spikescan_runtime::ops::elementwise::{self, Binary};
use spikescan_runtime::{Device, DeviceOptions, Resources};

const N: usize = 4096;

fn device() -> Device {
    Device::with_options(DeviceOptions::from_env()).unwrap()
}

fn buffers(r: Resources) -> usize {
    r.tensor_buffers + r.pooled_buffers
}

/// The hazard the old pool had: recording A drops an intermediate it still reads; recording
/// B, opened on another thread, allocates its output, submits first and keeps the tensor.
/// A's later submit must not write into B's result.
#[test]
fn a_buffer_pending_on_one_threads_recording_never_serves_another_thread() {
    let d = device();
    let xa = d.tensor_f32(&vec![1.0; N], &[N]).unwrap();
    let mut a = d.recorder("a");
    let out_a = {
        let tmp = elementwise::relu(&mut a, &xa).unwrap();
        elementwise::relu(&mut a, &tmp).unwrap()
    };
    // tmp's buffer is in the pool now, pending on A.
    assert!(d.resources().pooled_buffers >= 1);
    let out_b = std::thread::scope(|s| {
        s.spawn(|| {
            let xb = d.tensor_f32(&vec![-2.0; N], &[N]).unwrap();
            let mut b = d.recorder("b");
            // Same size class as tmp: the pool must hand B another buffer.
            let y = elementwise::relu(&mut b, &xb).unwrap();
            b.submit().unwrap();
            y
        })
        .join()
        .unwrap()
    });
    a.submit().unwrap();
    let b = d.read_f32(&out_b).unwrap();
    assert!(
        b.iter().all(|&v| v == 0.0),
        "B's result was overwritten by A's pending work: {:?}",
        &b[..4]
    );
    assert_eq!(d.read_f32(&out_a).unwrap(), vec![1.0; N]);
    // Once A is submitted its buffers serve everyone again: nothing leaks into `pending`.
    drop((out_a, out_b, xa));
    let before = buffers(d.resources());
    std::thread::scope(|s| {
        s.spawn(|| {
            let x = d.tensor_f32(&vec![3.0; N], &[N]).unwrap();
            let mut r = d.recorder("c");
            let y = elementwise::relu(&mut r, &x).unwrap();
            r.submit().unwrap();
            assert_eq!(d.read_f32(&y).unwrap(), vec![3.0; N]);
        });
    });
    assert_eq!(
        buffers(d.resources()),
        before,
        "the free buffers were reused"
    );
}

/// While another thread holds a recording open, a recording still reuses its own released
/// intermediates (the forward passes of several threads do not each grow the pool), and the
/// other thread's allocation gets a fresh buffer.
#[test]
fn a_recording_reuses_its_own_released_buffers_while_another_thread_records() {
    let d = device();
    let x = d.tensor_f32(&vec![5.0; N], &[N]).unwrap();
    let (opened_tx, opened_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (alloc_tx, alloc_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let d2 = &d;
        let x2 = &x;
        s.spawn(move || {
            let mut other = d2.recorder("held open");
            opened_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let before = buffers(d2.resources());
            let y = elementwise::relu(&mut other, x2).unwrap();
            alloc_tx.send(buffers(d2.resources()) - before).unwrap();
            done_rx.recv().unwrap();
            other.submit().unwrap();
            assert_eq!(d2.read_f32(&y).unwrap(), vec![5.0; N]);
        });
        // Owned here, so a failed assertion below drops it and the other thread ends too.
        let (done_tx, go_tx) = (done_tx, go_tx);
        opened_rx.recv().unwrap();
        let mut mine = d.recorder("mine");
        let tmp = elementwise::relu(&mut mine, &x).unwrap();
        drop(tmp);
        let before = buffers(d.resources());
        let y = elementwise::relu(&mut mine, &x).unwrap();
        assert_eq!(
            buffers(d.resources()),
            before,
            "a recording reuses the buffer it released"
        );
        // The same free class exists for the other thread only as a buffer pending on `mine`
        // (y holds the reused one, so the pool is empty of that class): a fresh buffer.
        let y2 = elementwise::relu(&mut mine, &x).unwrap();
        drop(y2);
        go_tx.send(()).unwrap();
        assert_eq!(
            alloc_rx.recv().unwrap(),
            1,
            "the other thread got a fresh buffer, not one pending on this recording"
        );
        mine.submit().unwrap();
        done_tx.send(()).unwrap();
        assert_eq!(d.read_f32(&y).unwrap(), vec![5.0; N]);
    });
    assert_eq!(d.resources().open_recordings, 0);
}

/// A capture opened while a recording is open on the same thread (it used to be refused)
/// gets no buffer that recording still reads: its graph can be replayed first.
#[test]
fn a_capture_beside_an_open_recording_takes_no_buffer_it_still_reads() {
    let d = device();
    let x = d.tensor_f32(&vec![2.0; N], &[N]).unwrap();
    let neg = d.tensor_f32(&vec![-1.0; N], &[N]).unwrap();
    let mut a = d.recorder("a");
    let out_a = {
        let tmp = elementwise::relu(&mut a, &neg).unwrap();
        elementwise::add(&mut a, &tmp, &x).unwrap()
    };
    let mut cap = d.capture("g").unwrap();
    let y = elementwise::relu(&mut cap, &x).unwrap();
    let g = cap.into_graph().unwrap();
    d.replay(&[&g], None).unwrap();
    a.submit().unwrap();
    assert_eq!(d.read_f32(&y).unwrap(), vec![2.0; N], "the graph's output");
    assert_eq!(d.read_f32(&out_a).unwrap(), vec![2.0; N]);
    // Nested ordinary recordings on one thread are attributed to neither: also safe.
    let mut outer = d.recorder("outer");
    let o = {
        let tmp = elementwise::relu(&mut outer, &neg).unwrap();
        elementwise::add(&mut outer, &tmp, &x).unwrap()
    };
    let mut inner = d.recorder("inner");
    let i = elementwise::relu(&mut inner, &x).unwrap();
    inner.submit().unwrap();
    outer.submit().unwrap();
    assert_eq!(d.read_f32(&i).unwrap(), vec![2.0; N]);
    assert_eq!(d.read_f32(&o).unwrap(), vec![2.0; N]);
}

/// Many threads each record chains of ops with intermediates dropped mid-recording and
/// submit in an order nobody controls: every result equals the single-threaded one, and the
/// pool stays bounded.
#[test]
fn many_threads_recording_chains_get_the_single_threaded_results() {
    let d = device();
    let run = |seed: u32| -> Vec<f32> {
        let base: Vec<f32> = (0..N as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let x = d.tensor_f32(&base, &[N]).unwrap();
        let mut r = d.recorder("chain");
        let mut cur = elementwise::relu(&mut r, &x).unwrap();
        for k in 0..6 {
            let s = elementwise::scale(&mut r, &cur, 1.0 + 0.25 * k as f32).unwrap();
            let t = elementwise::binary(&mut r, Binary::Sub, &s, &x).unwrap();
            cur = elementwise::relu(&mut r, &t).unwrap();
        }
        r.submit().unwrap();
        d.read_f32(&cur).unwrap()
    };
    let want: Vec<Vec<f32>> = (0..8).map(run).collect();
    let warm = buffers(d.resources());
    for round in 0..3 {
        let got: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let run = &run;
                    s.spawn(move || (0..8).map(|i| run((i + 2 * t) % 8)).collect::<Vec<_>>())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, results) in got.iter().enumerate() {
            for (i, r) in results.iter().enumerate() {
                let seed = (i + 2 * t) % 8;
                assert!(
                    *r == want[seed],
                    "round {round}, thread {t}, forward {i}: differs from the single-threaded run"
                );
            }
        }
    }
    // 4 threads at once need at most 4 times one thread's buffers.
    let after = buffers(d.resources());
    assert!(after <= 4 * warm + 4, "{after} buffers after, {warm} warm");
}

/// Host uploads never land in a buffer pending on an open recording — also when that
/// buffer was handed back to its recording and released again without being bound (it keeps
/// its pending list) — and a tensor whose buffer is still pending on one recording is refused
/// by another recording and by host writes.
#[test]
fn uploads_and_other_recordings_never_get_a_buffer_still_pending() {
    let d = device();
    let x = d.tensor_f32(&vec![4.0; N], &[N]).unwrap();
    let neg = d.tensor_f32(&vec![-1.0; N], &[N]).unwrap();
    let mut a = d.recorder("a");
    let out_a = {
        let tmp = elementwise::relu(&mut a, &neg).unwrap(); // all zeros
        elementwise::add(&mut a, &tmp, &x).unwrap()
    };
    // tmp's buffer is pending on A. A takes it back and releases it unbound.
    let again = a.alloc(&[N], spikescan_runtime::DType::F32).unwrap();
    // Bound by another recording, or written from the host, while A is open: refused.
    let mut b = d.recorder("b");
    let e = elementwise::relu(&mut b, &again).unwrap_err().to_string();
    assert!(e.contains("Recorder::alloc"), "{e}");
    let e = d.write_f32(&again, &vec![0.0; N]).unwrap_err().to_string();
    assert!(e.contains("Device::upload"), "{e}");
    drop(b);
    drop(again);
    // An upload of the same size class now must not take that buffer.
    let up = d.tensor_f32(&vec![9.0; N], &[N]).unwrap();
    let plain = d.alloc(&[N], spikescan_runtime::DType::F32).unwrap();
    d.write_f32(&plain, &vec![7.0; N]).unwrap();
    a.submit().unwrap();
    assert_eq!(
        d.read_f32(&up).unwrap(),
        vec![9.0; N],
        "the upload survived A"
    );
    assert_eq!(
        d.read_f32(&plain).unwrap(),
        vec![7.0; N],
        "so did a plain alloc"
    );
    assert_eq!(d.read_f32(&out_a).unwrap(), vec![4.0; N]);
}
