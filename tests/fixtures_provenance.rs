//! Every committed model fixture comes from the official code itself: its io.safetensors
//! names the repository, file and commit (or package version) that produced it
//! (tools/reference/official.py and the make_*_fixtures.py scripts).

mod common;
use common::fixture;

use spikescan::loader::Checkpoint;

const OFFICIAL: &[(&str, &str)] = &[
    ("spikformer-", "ZK-Zhou/spikformer"),
    ("meta-spikeformer-", "BICLab/Spike-Driven-Transformer-V2"),
    ("lmuformer-", "zeyuliu1037/LMUFormer"),
    ("spiking-lmuformer-", "zeyuliu1037/LMUFormer"),
    ("mamba-", "huggingface/transformers"),
    ("falcon-mamba-", "huggingface/transformers"),
];

#[test]
fn every_fixture_names_the_official_source_that_made_it() {
    let mut seen = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let file = if name == "audio" {
            dir.join("chirp.fbank.safetensors")
        } else {
            dir.join("io.safetensors")
        };
        let io = Checkpoint::open(&file).unwrap();
        let repo = io
            .metadata("source_repo")
            .unwrap_or_else(|| panic!("{name}: no source_repo in {}", file.display()));
        let want = if name == "audio" {
            "pytorch/audio"
        } else {
            OFFICIAL
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
                .unwrap_or_else(|| panic!("{name}: no official repository is known for it"))
                .1
        };
        assert_eq!(repo, want, "{name}");
        for key in ["source_file", "source_commit"] {
            let v = io.metadata(key).unwrap_or("");
            assert!(!v.is_empty(), "{name}: no {key}");
        }
        eprintln!(
            "{name}: {repo} {} at {}",
            io.metadata("source_file").unwrap(),
            io.metadata("source_commit").unwrap()
        );
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} fixtures found");
}
