//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, minimised by `cargo fuzz cmin`)
//! through the same functions the cargo-fuzz targets run (`fuzz/src/lib.rs`, included here),
//! on stable and without a GPU: every input must end in `Ok` or an error with a message,
//! never a panic. Also checks by name the bombs the parsers must refuse before allocating.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

fn replay(target: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let mut failed = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        match std::panic::catch_unwind(|| targets::run(target, &bytes)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) if !e.trim().is_empty() => {}
            Ok(Err(_)) => failed.push(format!("{}: an empty error message", f.display())),
            Err(_) => failed.push(format!("{}: panicked", f.display())),
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn every_fuzz_corpus_input_ends_in_ok_or_an_error() {
    for target in targets::TARGETS {
        replay(target);
    }
}

#[test]
fn a_safetensors_header_claiming_2_pow_62_bytes_is_refused() {
    let mut b = (1u64 << 62).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    let e = targets::checkpoint(&b).unwrap_err();
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // A tensor claiming 2^62 elements over a few bytes of data.
    let hdr = br#"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#;
    let mut b = (hdr.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hdr);
    b.extend_from_slice(&[0; 4]);
    assert!(targets::checkpoint(&b).is_err());
}

#[test]
fn configs_with_huge_sizes_are_refused_before_allocating() {
    for cfg in [
        r#"{"model_type":"mamba","hidden_size":1000000000,"num_hidden_layers":24,"vocab_size":50280}"#,
        r#"{"model_type":"mamba","hidden_size":768,"num_hidden_layers":1000000000,"vocab_size":50280}"#,
        r#"{"d_model":4194304,"n_layer":1000,"vocab_size":50277,"ssm_cfg":{"expand":4611686018427387904}}"#,
        r#"{"d_model":768,"n_layer":24,"vocab_size":50277,"ssm_cfg":{},"pad_vocab_size_multiple":18446744073709551615}"#,
        r#"{"architecture":"spikformer","embed_dims":1048576,"num_heads":8,"mlp_ratios":4,"img_size_h":224,"img_size_w":224,"in_channels":3,"num_classes":1000,"depths":1000}"#,
        r#"{"architecture":"spikformer","embed_dims":384,"num_heads":8,"mlp_ratios":1e300,"img_size_h":224,"img_size_w":224,"in_channels":3,"num_classes":1000,"depths":8}"#,
        r#"{"architecture":"meta_spikeformer","embed_dim":[1000000000,8,8,8],"num_classes":10}"#,
        r#"{"architecture":"lmuformer","embed_dims":256,"in_channels":128,"num_classes":35,"depths":1000000000}"#,
    ] {
        let e = targets::config(cfg.as_bytes()).expect_err(cfg);
        assert!(e.contains("beyond the supported"), "{cfg}: {e}");
    }
}

#[test]
fn a_tiny_png_claiming_100000_by_100000_pixels_is_refused() {
    // The signature and an IHDR chunk (its CRC included) claiming 100000 x 100000 RGB.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.to_be_bytes());
    let e = spikescan_models::vision::decode_image(&png, 224, 224, 0.875).unwrap_err();
    assert!(e.contains("cannot decode"), "{e}");
}

/// CRC-32 (IEEE), as PNG chunks carry.
fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn an_image_of_extreme_aspect_ratio_is_refused_before_resizing() {
    // 12000 x 1: its short side scaled to 256 px would make it 3 M x 256.
    let img = image::RgbImage::from_pixel(12_000, 1, image::Rgb([1, 2, 3]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let e = spikescan_models::vision::decode_image(&png, 224, 224, 0.875).unwrap_err();
    assert!(e.contains("would be"), "{e}");
}
