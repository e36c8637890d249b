//! The bundled models (models/, trained by tools/train_bundled.py): through the engine, each
//! reaches the held-out accuracy (or loss) its model card reports.

mod common;

use std::path::PathBuf;

use common::device;
use spikescan::models::eval::{accuracy, token_loss, Heldout};
use spikescan::models::{Model, ModelDir};

const CLASSIFIERS: &[&str] = &[
    "spikformer-digits",
    "meta-spikeformer-digits",
    "lmuformer-digits",
    "spiking-lmuformer-digits",
];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

/// The `**...**` result the model card states.
fn card(name: &str) -> String {
    let text = std::fs::read_to_string(dir(name).join("README.md")).unwrap();
    let start = text.find("**").expect("a bold result in the card") + 2;
    let end = start + text[start..].find("**").unwrap();
    text[start..end].to_string()
}

#[test]
fn bundled_classifiers_match_their_model_cards() {
    let dev = device();
    for name in CLASSIFIERS {
        let model = Model::from_dir(&dev, &ModelDir::open(dir(name)).unwrap()).unwrap();
        let set = Heldout::open(&dir(name)).unwrap();
        let (correct, total) = accuracy(&dev, &model, &set, 120).unwrap();
        // "332/360 = 92.22%"
        let stated = card(name);
        let (c, t) = stated.split_once(" = ").unwrap().0.split_once('/').unwrap();
        let (c, t): (usize, usize) = (c.parse().unwrap(), t.parse().unwrap());
        eprintln!("{name}: engine {correct}/{total}, model card {c}/{t}");
        assert_eq!(total, t, "{name}: held-out size");
        assert!(
            correct.abs_diff(c) <= 1,
            "{name}: engine {correct}/{total} vs card {c}/{t}"
        );
        assert!(correct * 10 >= total * 8, "{name}: the model is trained");
    }
}

#[test]
fn bundled_language_model_matches_its_model_card() {
    let dev = device();
    let name = "mamba-pydoc";
    let Model::Mamba(m) = Model::from_dir(&dev, &ModelDir::open(dir(name)).unwrap()).unwrap()
    else {
        panic!("{name} is not a Mamba model")
    };
    let set = Heldout::open(&dir(name)).unwrap();
    let loss = token_loss(&dev, &m, &set, 16).unwrap();
    let stated: f64 = card(name)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{name}: engine {loss:.4} nats/token, model card {stated:.4}");
    assert!((loss - stated).abs() < 2e-3, "{name}: {loss} vs {stated}");
    assert!(loss < 4.0, "{name}: the model is trained");
    // The tokenizer ships with it and round-trips text.
    let tok = tokenizers::Tokenizer::from_file(dir(name).join("tokenizer.json")).unwrap();
    let ids = tok.encode("The with statement", false).unwrap();
    assert_eq!(
        tok.decode(ids.get_ids(), false).unwrap(),
        "The with statement"
    );
}

/// On a device whose storage bindings are smaller than the vocabulary matrix (as WebGPU's
/// default, many mobile GPUs and lavapipe are for mamba-1.4b), the embedding and the tied head
/// are split into row blocks: the same f32 logits, bit for bit, and the same generation.
#[test]
fn mamba_splits_its_vocabulary_matrix_over_a_small_binding_limit() {
    use spikescan::models::Sampling;
    use spikescan::{Device, DeviceOptions};
    let name = "mamba-pydoc";
    let md = ModelDir::open(dir(name)).unwrap();
    let load = |dev: &Device| match Model::from_dir(dev, &md).unwrap() {
        Model::Mamba(m) => m,
        _ => panic!("{name} is not a Mamba model"),
    };
    let whole_dev = device();
    let whole = load(&whole_dev);
    // The table is 1024 x 128 f32 = 512 KiB; every other buffer here is under 384 KiB.
    let small_dev = Device::with_options(DeviceOptions {
        max_binding: Some(384 << 10),
        ..DeviceOptions::from_env()
    })
    .unwrap();
    let split = load(&small_dev);
    assert_eq!(whole.vocab_blocks(), 1);
    assert_eq!(split.vocab_blocks(), 2, "768 rows, then 256");
    let set = Heldout::open(&dir(name)).unwrap();
    let prompt: Vec<u32> = set.input[..48].iter().map(|&v| v as u32).collect();
    let a = whole.logits(&whole_dev, &prompt, 2).unwrap();
    let b = split.logits(&small_dev, &prompt, 2).unwrap();
    assert_eq!(a.len(), 48 * 1024);
    assert!(a == b, "split logits differ from the whole matrix's");
    let s = Sampling::default();
    let ga = whole
        .generate(&whole_dev, &prompt[..8], 12, &s, |_| {})
        .unwrap();
    let gb = split
        .generate(&small_dev, &prompt[..8], 12, &s, |_| {})
        .unwrap();
    assert_eq!(ga, gb);
}
