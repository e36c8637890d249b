// Every shader variant through Dawn (Chrome's WebGPU implementation) and its WGSL compiler
// Tint, on dawn.node (npm `webgpu`): each variant compiled and each of its pipelines built
// under the adapter's limits and under WebGPU's default limits (a device asking for nothing
// beyond the features the variant needs), and each 128-invocation (WG128) variant under
// Dawn's compatibility feature level (128 invocations per workgroup, as its GLES backend);
// then a few kernels dispatched and compared with values computed here. Every failure is reported with file, variant, entry point and
// message; the exit status is 1 when anything failed.
//
// node tint.mjs EXPORT_DIR WEBGPU_INDEX_JS   (EXPORT_DIR from examples/export_shaders.rs)

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [dir, webgpuIndex] = process.argv.slice(2);
if (!dir || !webgpuIndex) {
  console.error("usage: node tint.mjs EXPORT_DIR WEBGPU_INDEX_JS");
  process.exit(2);
}
const { create, globals } = await import(pathToFileURL(webgpuIndex).href);
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error("tint: Dawn found no adapter (is VK_ICD_FILENAMES set to Mesa 25's lavapipe?)");
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
const failures = [];
const fail = (where, message) => {
  failures.push(`${where}: ${message}`);
  console.error(`FAIL ${where}: ${message}`);
};

function featuresOf(m) {
  const f = [];
  if (m.f16) f.push("shader-f16");
  if (m.subgroups) f.push("subgroups");
  return f;
}

// Devices are cached per (limit set, features).
const devices = new Map();
async function device(limitSet, features) {
  const key = `${limitSet}|${features.join(",")}`;
  if (devices.has(key)) return devices.get(key);
  const missing = features.filter((f) => !adapter.features.has(f));
  // Compatibility mode: a variant that needs an optional feature the compat adapter lacks is
  // reported as such below.
  let dev = null;
  if (missing.length === 0) {
    const desc = { requiredFeatures: features };
    if (limitSet === "adapter") {
      desc.requiredLimits = {};
      for (const k in adapter.limits) desc.requiredLimits[k] = adapter.limits[k];
    }
    // An adapter creates one device: each device gets its own.
    const own = await gpu.requestAdapter(limitSet === "compat" ? { featureLevel: "compatibility" } : {});
    dev = await own.requestDevice(desc);
    dev.addEventListener("uncapturederror", (e) => fail(`${key} uncaptured`, e.error.message));
  }
  devices.set(key, dev);
  return dev;
}

function variantName(m) {
  return `${m.file}[${m.defines.join(",")}]`;
}

function sourceLine(code, line) {
  return (code.split("\n")[line - 1] || "").trim();
}

const wg128 = (m) => m.defines.includes("WG128");
const counts = {};
for (const limitSet of ["adapter", "webgpu-default", "compat"]) {
  let modules = 0;
  let pipelines = 0;
  const set = manifest.modules.filter((m) => limitSet !== "compat" || wg128(m));
  for (const m of set) {
    const where = `${limitSet} ${variantName(m)}`;
    const dev = await device(limitSet, featuresOf(m));
    if (!dev) {
      fail(where, `the adapter lacks ${featuresOf(m).join(", ")}`);
      continue;
    }
    const code = readFileSync(join(dir, m.wgsl), "utf8");
    dev.pushErrorScope("validation");
    const module = dev.createShaderModule({ code, label: variantName(m) });
    const info = await module.getCompilationInfo();
    const scoped = await dev.popErrorScope();
    let bad = false;
    for (const msg of info.messages) {
      if (msg.type !== "error") continue;
      bad = true;
      fail(
        `${where} (${m.wgsl}:${msg.lineNum}:${msg.linePos})`,
        `${msg.message} | ${sourceLine(code, msg.lineNum)}`,
      );
    }
    if (scoped && !bad) {
      bad = true;
      fail(where, scoped.message);
    }
    if (bad) continue;
    modules += 1;
    for (const p of m.pipelines) {
      const pw = `${where}:${p.entry}${JSON.stringify(p.constants)}`;
      try {
        await dev.createComputePipelineAsync({
          layout: "auto",
          compute: { module, entryPoint: p.entry, constants: p.constants },
        });
        pipelines += 1;
      } catch (e) {
        fail(pw, String(e.message || e).split("\n").slice(0, 6).join(" | "));
      }
    }
  }
  const total = set.reduce((s, m) => s + m.pipelines.length, 0);
  counts[limitSet] = { modules, pipelines, total };
  console.log(
    `tint ${limitSet}: ${modules} of ${set.length} variants compiled, ` +
      `${pipelines} of ${total} pipelines built`,
  );
}

// The compat device must refuse a 256-invocation pipeline, or the check above proves nothing.
{
  const m = manifest.modules.find((v) => v.file === "elementwise.wgsl" && v.defines.length === 0);
  const dev = await device("compat", []);
  const module = dev.createShaderModule({ code: readFileSync(join(dir, m.wgsl), "utf8") });
  let refused = false;
  try {
    await dev.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "unary", constants: {} } });
  } catch {
    refused = true;
  }
  if (!refused) fail("compat", "a 256-invocation pipeline was accepted at the compatibility feature level");
  else console.log("tint compat: a 256-invocation pipeline is refused, as it must be");
}

// ---- A few kernels dispatched through Dawn (default WebGPU limits) and compared. ----

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

async function run(m, entry, constants, params, inputs, outLen, workgroups) {
  const dev = await device(wg128(m) ? "compat" : "webgpu-default", featuresOf(m));
  const code = readFileSync(join(dir, m.wgsl), "utf8");
  const module = dev.createShaderModule({ code });
  const pipeline = await dev.createComputePipelineAsync({
    layout: "auto",
    compute: { module, entryPoint: entry, constants },
  });
  const buf = (data, usage) => {
    const b = dev.createBuffer({ size: Math.max(16, data.byteLength), usage, mappedAtCreation: true });
    new Uint8Array(b.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    b.unmap();
    return b;
  };
  const U = GPUBufferUsage;
  const entries = [{ binding: 0, resource: { buffer: buf(params, U.UNIFORM) } }];
  inputs.forEach((x, i) => entries.push({ binding: 1 + i, resource: { buffer: buf(x, U.STORAGE) } }));
  const out = dev.createBuffer({ size: outLen * 4, usage: U.STORAGE | U.COPY_SRC });
  entries.push({ binding: 1 + inputs.length, resource: { buffer: out } });
  const read = dev.createBuffer({ size: outLen * 4, usage: U.MAP_READ | U.COPY_DST });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  enc.copyBufferToBuffer(out, 0, read, 0, outLen * 4);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const got = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  return got;
}

function compare(name, got, want, tol) {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    if (!(e <= tol)) worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
    if (!(e <= tol)) {
      fail(`dispatch ${name}`, `element ${i}: got ${got[i]}, want ${want[i]}`);
      return false;
    }
  }
  console.log(`dispatch ${name}: ${want.length} values match (tolerance ${tol})`);
  return true;
}

const find = (file, defines) =>
  manifest.modules.find((m) => m.file === file && m.defines.join(",") === defines.join(","));
let dispatched = 0;
const r = rng(7);

// Each kernel below runs as the 256-invocation variant (default limits) and as the WG128 one
// (compatibility feature level), its grid sized by the variant's width.
const widths = [[[], 256], [["WG128"], 128]];

// Elementwise unary: relu, silu, sigmoid, affine over 1000 values (not a multiple of 256).
for (const [wide, wg] of widths) {
  const m = find("elementwise.wgsl", wide);
  const n = 1000;
  const x = Float32Array.from({ length: n }, () => r() * 16 - 8);
  const ops = [
    [0, "relu", (v) => Math.max(v, 0), 0],
    [2, "silu", (v) => v / (1 + Math.exp(-v)), 2e-6],
    [5, "sigmoid", (v) => 1 / (1 + Math.exp(-v)), 2e-6],
    [4, "affine", (v) => 0.5 * v - 1.25, 1e-7],
  ];
  for (const [code, name, f] of ops) {
    const params = new ArrayBuffer(16);
    new Uint32Array(params, 0, 1)[0] = n;
    new Float32Array(params, 4, 2).set([0.5, -1.25]);
    const got = await run(m, "unary", { OP: code }, new Uint8Array(params), [x], n, Math.ceil(n / wg));
    const tol = ops.find((o) => o[1] === name)[3];
    if (compare(`${variantName(m)} unary ${name}`, got, Array.from(x, f), tol)) dispatched += 1;
  }
}

// RMSNorm and LayerNorm rows (workgroup reductions with barriers), plain and subgroup
// variants: 3 rows of 300 (more than one value per invocation).
for (const [file, entry] of [["rms_norm.wgsl", "rms_norm"], ["layer_norm.wgsl", "layer_norm"]]) {
  for (const defines of [[], ["SUBGROUPS"], ["WG128"], ["SUBGROUPS", "WG128"]]) {
    const m = find(file, defines);
    if (!m) continue;
    if (defines.length && !adapter.features.has("subgroups")) {
      fail(`dispatch ${file}`, "the adapter lacks subgroups");
      continue;
    }
    const rows = 3;
    const d = 300;
    const eps = 1e-5;
    const x = Float32Array.from({ length: rows * d }, () => r() * 4 - 2);
    const g = Float32Array.from({ length: d }, () => r() + 0.5);
    const b = Float32Array.from({ length: d }, () => r() - 0.5);
    const params = new ArrayBuffer(16);
    new Uint32Array(params, 0, 2).set([rows, d]);
    new Float32Array(params, 8, 1)[0] = eps;
    const inputs = entry === "rms_norm" ? [x, g] : [x, g, b];
    const got = await run(m, entry, {}, new Uint8Array(params), inputs, rows * d, rows);
    const want = [];
    for (let i = 0; i < rows; i++) {
      const row = Array.from(x.subarray(i * d, (i + 1) * d));
      if (entry === "rms_norm") {
        const ms = row.reduce((s, v) => s + v * v, 0) / d;
        row.forEach((v, j) => want.push((v / Math.sqrt(ms + eps)) * g[j]));
      } else {
        const mean = row.reduce((s, v) => s + v, 0) / d;
        const vr = row.reduce((s, v) => s + (v - mean) * (v - mean), 0) / d;
        row.forEach((v, j) => want.push(((v - mean) / Math.sqrt(vr + eps)) * g[j] + b[j]));
      }
    }
    if (compare(`${variantName(m)} ${entry}`, got, want, 1e-5)) dispatched += 1;
  }
}

// Max pooling 3x3, stride 2, padding 1 over 2 x 7 x 7 (windows at the border read the
// implicit -inf padding): exact.
for (const [wide, wg] of widths) {
  const m = find("pool.wgsl", wide);
  const [n, c, h, w, k, s, pad] = [1, 2, 7, 7, 3, 2, 1];
  const oh = Math.floor((h + 2 * pad - k) / s) + 1;
  const ow = Math.floor((w + 2 * pad - k) / s) + 1;
  const x = Float32Array.from({ length: n * c * h * w }, () => -1 - r() * 8);
  const params = new Uint32Array([n, c, h, w, oh, ow, k, k, s, s, pad, pad, 1, 1, 0, 0]);
  const got = await run(m, "maxpool2d", {}, params, [x], n * c * oh * ow, Math.ceil((n * c * oh * ow) / wg));
  const want = [];
  for (let p = 0; p < n * c; p++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let best = -Infinity;
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const iy = oy * s + ky - pad;
            const ix = ox * s + kx - pad;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) best = Math.max(best, x[(p * h + iy) * w + ix]);
          }
        }
        want.push(Math.fround(best));
      }
    }
  }
  if (compare(`${variantName(m)} maxpool2d`, got, want, 0)) dispatched += 1;
}

console.log(
  `tint: adapter "${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description}", ` +
    `${dispatched} kernels dispatched and matched, ${failures.length} failures`,
);
for (const d of devices.values()) if (d) d.destroy();
process.exit(failures.length ? 1 : 0);
