// Times llama.cpp (through node-llama-cpp's prebuilt libraries) on a GGUF Mamba, for
// tools/bench_llamacpp.py, which installs the package and writes the GGUF. Prints one JSON
// object on stdout:
//   {"prompt_s": [..], "decode_s": [..], "tokens": [[..] per sequence], "device": ".."}
// prompt_s: seconds for `batch` prompts of `prompt` ids each, one value a rep (fresh state,
// after an untimed one);
// decode_s: seconds for `steps` greedy tokens on every sequence after the last prompt (the
// first token is the prompt's; the rest are decode steps); tokens: the greedy ids.
//
//   node tools/llamacpp.mjs '{"module": ".../node-llama-cpp/dist/index.js", "gguf": "m.gguf",
//     "gpu": "vulkan" | false, "batch": 1, "prompt": [ids], "steps": 32, "reps": 3, "threads": 2}'
import { pathToFileURL } from "node:url";

const a = JSON.parse(process.argv[2]);
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(a.module).href);
const llama = await getLlama({
    gpu: a.gpu,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: a.gpu ? "max" : 0 });
const n = a.prompt.length;
const ctx = await model.createContext({
    contextSize: n + a.steps + 16,
    sequences: a.batch,
    batchSize: Math.max(n * a.batch, a.batch),
    threads: a.threads,
});
const seqs = Array.from({ length: a.batch }, () => ctx.getSequence());
const now = () => Number(process.hrtime.bigint()) / 1e9;

// One untimed prompt first: it compiles the backend's pipelines.
const prompt_s = [];
for (let r = -1; r < a.reps; r++) {
    await Promise.all(seqs.map((s) => s.clearHistory()));
    const t0 = now();
    // All but the last id without sampling; the last one is the first step of `evaluate`.
    await Promise.all(seqs.map((s) => s.evaluateWithoutGeneratingNewTokens(a.prompt)));
    if (r >= 0) prompt_s.push(now() - t0);
}

// The greedy continuation: the prompt's last id opens the generator, which yields one token
// an evaluation (end-of-generation ids too: the vocabulary is a placeholder); every sequence's next() is pending at once, so each step is one batch.
await Promise.all(seqs.map((s) => s.clearHistory()));
await Promise.all(seqs.map((s) => s.evaluateWithoutGeneratingNewTokens(a.prompt.slice(0, -1))));
const gens = seqs.map((s) => s.evaluate(a.prompt.slice(-1), { temperature: 0, yieldEogToken: true }));
const tokens = seqs.map(() => []);
const decode_s = [];
let t0 = now();
for (let i = 0; i < a.steps; i++) {
    const out = await Promise.all(gens.map((g) => g.next()));
    out.forEach((o, j) => tokens[j].push(o.value));
    const t = now();
    decode_s.push(t - t0);
    t0 = t;
}
await Promise.all(gens.map((g) => g.return()));
const device = a.gpu ? (llama.getGpuDeviceNames ? (await llama.getGpuDeviceNames()).join(", ") : "gpu") : "cpu";
process.stdout.write(JSON.stringify({ prompt_s, decode_s, tokens, device }) + "\n");
await ctx.dispose();
await model.dispose();
await llama.dispose();
