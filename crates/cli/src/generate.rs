//! `spikescan generate`: text generation with a Mamba model, streamed as tokens come.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use spikescan::models::{Model, Sampling};
use spikescan::Device;

pub struct GenerateArgs {
    pub model: PathBuf,
    pub prompt: Option<String>,
    pub prompt_ids: Option<String>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub output: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    crate::ui::check_output(args.output.as_deref())?;
    let dev = Device::new()?;
    let pb = crate::ui::spinner(format!("loading {}", args.model.display()));
    let md = crate::ui::open_model(&args.model)?;
    let loaded = Model::from_dir(&dev, &md)?;
    crate::ui::done(pb);
    crate::ui::check_weights(&md)?;
    let Model::Mamba(m) = loaded else {
        bail!(
            "{} is not a language model (generate runs Mamba models)",
            args.model.display()
        );
    };
    let tok_path = md.path.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        Some(spikescan::models::text::load_tokenizer(&tok_path)?)
    } else {
        None
    };
    let prompt: Vec<u32> = match (&args.prompt, &args.prompt_ids) {
        (Some(_), Some(_)) => bail!("give either --prompt or --prompt-ids, not both"),
        (None, None) => bail!("give a --prompt TEXT or --prompt-ids 1,2,3"),
        (None, Some(ids)) => spikescan::models::input::parse_token_ids(ids)
            .map_err(|e| anyhow::anyhow!("--prompt-ids: {e}"))?,
        (Some(text), None) => {
            let tok = tokenizer.as_ref().with_context(|| {
                format!(
                    "--prompt needs a tokenizer: {} is missing (or pass --prompt-ids)",
                    tok_path.display()
                )
            })?;
            tok.encode(text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?
                .get_ids()
                .to_vec()
        }
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    m.check_ids(&prompt)?;
    let mut stdout = std::io::stdout();
    let mut printed = String::new();
    let mut generated: Vec<u32> = Vec::new();
    let json = crate::ui::json();
    if let (Some(text), false) = (&args.prompt, json) {
        print!("{text}");
        let _ = stdout.flush();
    }
    let t0 = std::time::Instant::now();
    let out = m.generate(&dev, &prompt, args.max_new_tokens, &args.sampling, |t| {
        generated.push(t);
        if json {
            return;
        }
        match &tokenizer {
            // Decode everything generated so far and print what is new (a token may complete
            // a character only together with the next one).
            Some(tok) => {
                if let Ok(text) = tok.decode(&generated, false) {
                    if text.len() > printed.len() && text.starts_with(printed.as_str()) {
                        print!("{}", &text[printed.len()..]);
                        printed = text;
                    }
                }
            }
            None => print!("{t} "),
        }
        let _ = stdout.flush();
    })?;
    let secs = t0.elapsed().as_secs_f64();
    if json {
        let text = tokenizer
            .as_ref()
            .and_then(|t| t.decode(&generated, false).ok());
        crate::ui::emit(serde_json::json!({
            "prompt_tokens": prompt.len(), "tokens": out, "generated_text": text,
            "seconds": secs, "device": dev.describe(),
        }));
    } else {
        println!();
    }
    crate::ui::note(format!(
        "{} prompt + {} new tokens in {secs:.2} s ({:.1} tokens/s) on {}",
        prompt.len(),
        out.len() - prompt.len(),
        (out.len() - prompt.len()) as f64 / secs.max(1e-9),
        dev.describe()
    ));
    if let Some(path) = &args.output {
        let ids: Vec<i64> = out.iter().map(|&t| t as i64).collect();
        spikescan::loader::save_i64(path, "tokens", &[1, ids.len()], &ids)?;
        crate::ui::note(format!(
            "wrote tokens [1, {}] to {}",
            ids.len(),
            path.display()
        ));
    }
    Ok(())
}
