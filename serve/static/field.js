// mycolens field mode: the served model answers on this device with ONNX Runtime Web (WASM), exactly as the server
// does (mycolens.inference.preprocess, mycolens.inference.onnx_model.answers, mycolens.verdict.rule.judge).
// Every number of the rule comes from the model's own model.json (GET /field/model.json); the ONNX file is checked
// against model.json's sha256 before it runs. The page calls load() once the page is loaded.
// The last verified model is kept on the device (see keep), so answers work offline; a new server model replaces it
// on the next online visit only once it passes the same check. window.mycolensField = {load(), answer(blob, topK), info()}.

const ORT_BASE = "/field/ort/";
const TOP_K = 3;
const ALLOWED_FORMATS = ["JPEG", "PNG", "WEBP"]; // mycolens.inference.preprocess.ALLOWED_FORMATS
let loading = null; // Promise of {ort, session, meta, variant, sha256, rule, ...}

export class FieldError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function sha256hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchBytes(url) {
  const r = await fetch(url, { cache: "no-cache" });
  if (!r.ok) throw new FieldError("model_unavailable", url + " answered HTTP " + r.status);
  return { bytes: await r.arrayBuffer(), headers: r.headers };
}

// ---------------------------------------------------------------- the kept model (Cache Storage)

// The last model pair that passed verification, kept on the device for answers with no network: model.json, its
// ONNX file and a pointer {sha256, variant, headers} written last. A pair is read back only when both hashes still
// match, so the device never runs a model with another model's model.json.
const STORE = "mycolens-field-model";
const KEPT = "/field/kept/";

async function keep(pair) {
  const cache = await caches.open(STORE);
  const dir = KEPT + pair.sha256 + "/";
  await cache.put(dir + "model.json", new Response(pair.metaBytes));
  await cache.put(dir + "model", new Response(pair.modelBytes));
  await cache.put(KEPT + "current", new Response(JSON.stringify({
    sha256: pair.sha256, variant: pair.variant, headers: pair.limitHeaders,
  })));
  for (const request of await cache.keys()) {
    const path = new URL(request.url).pathname;
    if (path.startsWith(KEPT) && path !== KEPT + "current" && !path.startsWith(dir)) await cache.delete(request);
  }
}

async function readKept() {
  if (!globalThis.caches) return null;
  const cache = await caches.open(STORE);
  const pointer = await cache.match(KEPT + "current");
  if (!pointer) return null;
  const { sha256, variant, headers } = await pointer.json();
  const meta = await cache.match(KEPT + sha256 + "/model.json");
  const model = await cache.match(KEPT + sha256 + "/model");
  if (!meta || !model) return null;
  const metaBytes = await meta.arrayBuffer();
  const modelBytes = await model.arrayBuffer();
  const parsed = JSON.parse(new TextDecoder().decode(metaBytes));
  const entry = parsed.files && parsed.files[variant];
  if ((await sha256hex(metaBytes)) !== sha256 || !entry || (await sha256hex(modelBytes)) !== entry.sha256) {
    return null;
  }
  return { sha256, variant, meta: parsed, metaBytes, modelBytes, limitHeaders: headers };
}

const LIMIT_HEADERS = ["X-Mycolens-Max-Bytes", "X-Mycolens-Max-Pixels", "X-Mycolens-Min-Side", "X-Mycolens-Wasm-Threads"];

// ONNX Runtime Web's WASM threads (serve.field.wasm_threads; 0: min(4, cores)), set before its first session; threads
// need a cross-origin-isolated page
function setThreads(ort, headers) {
  const wanted = Number(headers["X-Mycolens-Wasm-Threads"] || 1);
  const threads = wanted > 0 ? wanted : Math.min(4, navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? threads : 1;
}

// VerdictRule.from_dict of mycolens.verdict.rule: rule_for(meta, variant) takes the variant's own thresholds
function ruleFor(meta, variant) {
  const own = meta.verdict_by_variant && meta.verdict_by_variant[variant];
  const d = own && Object.keys(own).length ? own : meta.verdict;
  const num = (k) => (k in d ? Number(d[k]) : Infinity);
  return {
    edible_min_confidence: Number(d.edible_min_confidence),
    poison_max: Number(d.poison_max),
    do_not_eat_min: Number(d.do_not_eat_min),
    ood_threshold: num("ood_threshold"),
    feature_threshold: num("feature_threshold"),
    input_checks: (d.input_checks || []).map((c) => ({
      stat: Number(c.stat), bound: c.bound, threshold: Number(c.threshold), reason: String(c.reason),
    })),
  };
}

async function session(ort, modelBytes) {
  return ort.InferenceSession.create(new Uint8Array(modelBytes), {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
}

// The served model.json and an ONNX file that matches its sha256 and runs here (the served variant first, then
// int8, then fp32); reuses the kept file when model.json is the kept one. Throws when none passes.
async function fetchServed(ort, kept, tried) {
  const { bytes: metaBytes, headers } = await fetchBytes("/field/model.json");
  const sha256 = await sha256hex(metaBytes);
  const meta = JSON.parse(new TextDecoder().decode(metaBytes));
  const limitHeaders = Object.fromEntries(LIMIT_HEADERS.map((h) => [h, headers.get(h)]));
  const served = headers.get("X-Mycolens-Variant") || "int8";
  setThreads(ort, limitHeaders);
  for (const variant of [...new Set([served, "int8", "fp32"])]) {
    const entry = meta.files && meta.files[variant];
    if (!entry) continue;
    try {
      let modelBytes;
      if (kept && kept.sha256 === sha256 && kept.variant === variant) {
        modelBytes = kept.modelBytes;
      } else {
        modelBytes = (await fetchBytes("/field/model/" + variant)).bytes;
        if ((await sha256hex(modelBytes)) !== entry.sha256) {
          throw new FieldError("model_unavailable", entry.path + " differs from model.json's sha256");
        }
      }
      const pair = { sha256, variant, meta, metaBytes, modelBytes, limitHeaders };
      return { ...pair, session: await session(ort, modelBytes) };
    } catch (e) {
      tried.push(variant + ": " + (e && e.message ? e.message : String(e)));
    }
  }
  throw new FieldError("model_unavailable", "no model file of the served model.json runs here (" + tried.join("; ") + ")");
}

// The model the device runs: the server's when it can be fetched and verified (then kept), else the kept one.
// `update` says which: "fetched" (the server's, new to this device), "current" (the server's, already kept) or
// "offline" / "refused" (the kept model; the server could not be reached / its model failed verification).
async function loadOnce() {
  const ort = await import(ORT_BASE + "ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = ORT_BASE;
  ort.env.wasm.proxy = false;
  const tried = [];
  let kept = null;
  try {
    kept = await readKept();
  } catch (e) {
    tried.push("kept model: " + (e && e.message ? e.message : String(e)));
  }
  let pair = null;
  let update;
  let problem = "";
  try {
    pair = await fetchServed(ort, kept, tried);
    update = kept && kept.sha256 === pair.sha256 ? "current" : "fetched";
    if (globalThis.caches) await keep(pair);
  } catch (e) {
    problem = e && e.message ? e.message : String(e);
    update = e instanceof FieldError ? "refused" : "offline";
    if (!kept) throw new FieldError("model_unavailable", "no model on this device yet, and " + problem);
    setThreads(ort, kept.limitHeaders);
    pair = { ...kept, session: await session(ort, kept.modelBytes) };
  }
  const { meta, variant, sha256 } = pair;
  const cat = meta.catalogue;
  const classes = cat.classes || cat.species;
  const limit = (name) => Number(pair.limitHeaders["X-Mycolens-" + name]);
  return {
    ort, session: pair.session, meta, variant, sha256, tried, update, problem,
    // the server's photo limits (serve.limits), so a photo the server refuses is refused here alike
    limits: { maxBytes: limit("Max-Bytes") || Infinity, maxPixels: limit("Max-Pixels") || Infinity, minSide: limit("Min-Side") || 1 },
    rule: ruleFor(meta, variant),
    classes,
    byId: Object.fromEntries(classes.map((c) => [c.id, c])),
    dangerous: classes.map((c) => c.edibility === "poisonous" || c.edibility === "deadly"),
  };
}

export function load() {
  if (!loading) loading = loadOnce().catch((e) => { loading = null; throw e; });
  return loading;
}

// ---------------------------------------------------------------- preprocessing (PIL's, bit for bit)

// the image type from the first bytes, as Pillow names it (JPEG, PNG, WEBP; GIF, TIFF, BMP are refused as
// unsupported), with the size its header declares when it can be read without decoding
function sniff(b) {
  const at = (i, ...v) => v.every((x, j) => b[i + j] === x);
  const ascii = (i, text) => at(i, ...Array.from(text, (c) => c.charCodeAt(0)));
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return { format: "PNG", width: b.length >= 24 ? dv.getUint32(16) : 0, height: b.length >= 24 ? dv.getUint32(20) : 0 };
  }
  if (at(0, 0xff, 0xd8, 0xff)) {
    let i = 2;
    while (i + 9 < b.length && b[i] === 0xff) {
      const marker = b[i + 1];
      const len = (b[i + 2] << 8) | b[i + 3];
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { format: "JPEG", height: (b[i + 5] << 8) | b[i + 6], width: (b[i + 7] << 8) | b[i + 8] };
      }
      i += 2 + len;
    }
    return { format: "JPEG", width: 0, height: 0 };
  }
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) {
    if (ascii(12, "VP8 ") && b.length >= 30) {
      return { format: "WEBP", width: (b[26] | (b[27] << 8)) & 0x3fff, height: (b[28] | (b[29] << 8)) & 0x3fff };
    }
    if (ascii(12, "VP8L") && b.length >= 25) {
      return {
        format: "WEBP",
        width: 1 + (b[21] | ((b[22] & 0x3f) << 8)),
        height: 1 + ((b[22] >> 6) | (b[23] << 2) | ((b[24] & 0x0f) << 10)),
      };
    }
    if (ascii(12, "VP8X") && b.length >= 30) {
      return {
        format: "WEBP",
        width: 1 + (b[24] | (b[25] << 8) | (b[26] << 16)),
        height: 1 + (b[27] | (b[28] << 8) | (b[29] << 16)),
      };
    }
    return { format: "WEBP", width: 0, height: 0 };
  }
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return { format: "GIF" };
  if (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a)) return { format: "TIFF" };
  if (ascii(0, "BM")) return { format: "BMP" };
  return null;
}

// a JPEG whose scan is not followed by its end marker (FF D9) was cut off (the browser would show half a photo)
function jpegComplete(b) {
  let sos = -1;
  for (let i = 2; i + 1 < b.length; i++) {
    if (b[i] === 0xff && b[i + 1] === 0xda) { sos = i; break; }
  }
  if (sos < 0) return false;
  for (let i = b.length - 2; i > sos; i--) if (b[i] === 0xff && b[i + 1] === 0xd9) return true;
  return false;
}

// decode_image with the server's limits: type, size, EXIF orientation, transparency over white, RGB;
// returns {data: RGBA bytes, width, height}
async function decode(blob, limits) {
  if (!blob || blob.size === 0) throw new FieldError("empty", "empty file: zero bytes");
  if (blob.size > limits.maxBytes) {
    throw new FieldError("too_large", "photo of " + blob.size + " bytes is over the limit of " + limits.maxBytes);
  }
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const kind = sniff(bytes);
  if (kind === null) throw new FieldError("not_image", "not an image (no known image header)");
  if (!ALLOWED_FORMATS.includes(kind.format)) {
    throw new FieldError("unsupported", "unsupported image type " + kind.format + "; send one of " + ALLOWED_FORMATS.join(", "));
  }
  const tooLarge = (w, h) => new FieldError(
    "too_large", "image of " + w + "x" + h + " pixels is over the limit of " + limits.maxPixels);
  if (kind.width * kind.height > limits.maxPixels) throw tooLarge(kind.width, kind.height);
  if (kind.format === "JPEG" && !jpegComplete(bytes)) {
    throw new FieldError("truncated", "corrupt or truncated image: the JPEG ends before its last scan");
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]), {
      imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none",
    });
  } catch (e) {
    throw new FieldError("truncated", "corrupt or truncated image: the browser cannot decode this " + kind.format);
  }
  const { width, height } = bitmap;
  if (width * height > limits.maxPixels) {
    bitmap.close();
    throw tooLarge(width, height);
  }
  if (Math.min(width, height) < limits.minSide) {
    bitmap.close();
    throw new FieldError("too_small", "image of " + width + "x" + height + " is below the minimum side " + limits.minSide);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { data: ctx.getImageData(0, 0, width, height).data, width, height };
}

// Pillow's Resample.c precompute_coeffs for the bilinear (triangle) filter, support scaled by the downscale factor,
// then normalize_coeffs_8bpc's fixed point (PRECISION_BITS = 22)
const PRECISION_BITS = 22;
function coeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = (x + xmin - center + 0.5) * ss;
      if (t < 0.0) t = -t;
      const w = t < 1.0 ? 1.0 - t : 0.0;
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0.0) kk[xx * ksize + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Float64Array(kk.length);
  for (let i = 0; i < kk.length; i++) {
    const v = kk[i] * (1 << PRECISION_BITS);
    fixed[i] = kk[i] < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { k: fixed, bounds, ksize };
}

function clip8(v) {
  if (v >= 2 ** (PRECISION_BITS + 8)) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / 2 ** PRECISION_BITS);
}

const HALF = 2 ** (PRECISION_BITS - 1);

// ImagingResampleHorizontal_8bpc: rows [offset, offset + rows) of an RGBA image iw wide, to nw wide
function passH(img, iw, rows, offset, nw, ch) {
  const out = new Uint8ClampedArray(nw * rows * 4);
  for (let yy = 0; yy < rows; yy++) {
    const row = (yy + offset) * iw * 4;
    for (let xx = 0; xx < nw; xx++) {
      const xmin = ch.bounds[xx * 2];
      const xmax = ch.bounds[xx * 2 + 1];
      const kb = xx * ch.ksize;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let x = 0; x < xmax; x++) {
        const p = row + (x + xmin) * 4;
        const k = ch.k[kb + x];
        s0 += img[p] * k;
        s1 += img[p + 1] * k;
        s2 += img[p + 2] * k;
      }
      const o = (yy * nw + xx) * 4;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
      out[o + 3] = 255;
    }
  }
  return out;
}

// ImagingResampleVertical_8bpc: an RGBA image iw wide to nh rows
function passV(img, iw, nh, cv) {
  const out = new Uint8ClampedArray(iw * nh * 4);
  for (let yy = 0; yy < nh; yy++) {
    const ymin = cv.bounds[yy * 2];
    const ymax = cv.bounds[yy * 2 + 1];
    const kb = yy * cv.ksize;
    for (let xx = 0; xx < iw; xx++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * iw + xx) * 4;
        const k = cv.k[kb + y];
        s0 += img[p] * k;
        s1 += img[p + 1] * k;
        s2 += img[p + 2] * k;
      }
      const o = (yy * iw + xx) * 4;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
      out[o + 3] = 255;
    }
  }
  return out;
}

// Image.resize((nw, nh), BILINEAR, reducing_gap=None) of an RGB image (as RGBA bytes): Pillow 13's
// ImagingResampleInner, whose pass order depends on the sizes (the vertical pass first when the height shrinks by
// more than twice as many pixels as the width); each pass rounds to 8 bits, so the order changes pixels
export function resizeBilinear(src, w, h, nw, nh) {
  const needH = nw !== w;
  const needV = nh !== h;
  const horizontalFirst = !(h - nh > 0 && h - nh > (w - nw) * 2);
  let img = src;
  if (horizontalFirst) {
    const cv = coeffs(h, nh);
    if (needH) {
      const yFirst = cv.bounds[0];
      const yLast = cv.bounds[nh * 2 - 2] + cv.bounds[nh * 2 - 1];
      for (let i = 0; i < nh; i++) cv.bounds[i * 2] -= yFirst;
      img = passH(img, w, yLast - yFirst, yFirst, nw, coeffs(w, nw));
    }
    if (needV) img = passV(img, nw, nh, cv);
  } else {
    img = passV(img, w, nh, coeffs(h, nh));
    if (needH) img = passH(img, w, nh, 0, nw, coeffs(w, nw));
  }
  return { data: img, width: nw, height: nh };
}

// resize_center_crop + normalize: float32 NCHW (1, 3, size, size)
export function preprocess(rgba, w, h, pre) {
  const size = Number(pre.image_size);
  const scale = size / Math.min(w, h);
  const nw = Math.max(size, pyRound(w * scale));
  const nh = Math.max(size, pyRound(h * scale));
  let img = { data: rgba, width: w, height: h };
  if (nw !== w || nh !== h) img = resizeBilinear(rgba, w, h, nw, nh);
  const left = Math.floor((nw - size) / 2);
  const top = Math.floor((nh - size) / 2);
  const x = new Float32Array(3 * size * size);
  const mean = pre.mean.map(Math.fround);
  const std = pre.std.map(Math.fround);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let xx = 0; xx < size; xx++) {
        const v = Math.fround(img.data[((y + top) * img.width + xx + left) * 4 + c] / 255);
        x[c * size * size + y * size + xx] = Math.fround(Math.fround(v - mean[c]) / std[c]);
      }
    }
  }
  return x;
}

// Python's round() for the resize sizes: halves go to the even neighbour
function pyRound(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------- the answer (mycolens.inference.onnx_model)

// numpy's sum of a contiguous float64 row (pairwise: eight partial sums for 8..128 elements)
function npSum(a) {
  const n = a.length;
  if (n < 8) {
    let res = 0.0;
    for (let i = 0; i < n; i++) res += a[i];
    return res;
  }
  const r = a.slice(0, 8);
  let i = 8;
  for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[i + j];
  let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; i++) res += a[i];
  return res;
}

function round6(v) {
  return Number(v.toFixed(6));
}

// softmax(logits, T) and energy_score(logits, T) of mycolens.verdict.calibration, in float64
function calibrate(logits, t) {
  const z = Array.from(logits, (v) => v / t);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const total = npSum(e);
  return { probs: e.map((v) => v / total), energy: -t * (m + Math.log(total)) };
}

// mycolens.verdict.rule.judge for one row: [verdict, abstain reason or null]
function judge(probs, dangerous, rule, energy, featureScore, stats) {
  const pDanger = npSum(probs.filter((_, i) => dangerous[i]));
  let top = 0;
  for (let i = 1; i < probs.length; i++) if (probs[i] > probs[top]) top = i;
  const conf = probs[top];
  if (stats) {
    for (const c of rule.input_checks) {
      const v = stats[c.stat];
      if (c.bound === "min" ? v < c.threshold : v > c.threshold) return ["uncertain", c.reason];
    }
  }
  let unlike = energy > rule.ood_threshold;
  if (featureScore !== null) unlike = unlike || featureScore > rule.feature_threshold;
  if (unlike) return ["uncertain", "unlike_training_data"];
  if (dangerous[top] || pDanger >= rule.do_not_eat_min) return ["do_not_eat", null];
  if (conf >= rule.edible_min_confidence && pDanger < rule.poison_max) return ["edible", null];
  return ["uncertain", "low_confidence"];
}

// OnnxClassifier.answer_outputs + answers for one photo
function answerOf(m, outputs, topK) {
  const names = m.session.outputNames;
  const logits = outputs[names[0]].data;
  const t = Number(m.meta.temperature);
  const { probs, energy } = calibrate(logits, t);
  const feature = "feature_score" in outputs ? Number(outputs.feature_score.data[0]) : null;
  const stats = "input_stats" in outputs ? Array.from(outputs.input_stats.data, Number) : null;
  const [verdict, reason] = judge(probs, m.dangerous, m.rule, energy, feature, stats);
  const pDanger = npSum(probs.filter((_, i) => m.dangerous[i]));
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]);
  const k = Math.max(1, Math.min(topK, probs.length));
  const top = m.classes[order[0]];
  return {
    species: top.id,
    common_name: top.common_name,
    edibility: top.edibility,
    verdict,
    confidence: round6(probs[order[0]]),
    poisonous_probability: round6(pDanger),
    abstained: verdict === "uncertain",
    abstain_reason: reason,
    top_k: order.slice(0, k).map((i) => ({
      species: m.classes[i].id, probability: round6(probs[i]), edibility: m.classes[i].edibility,
    })),
    lookalikes: (top.lookalikes || []).map((s) => {
      const c = m.byId[s] || { id: s };
      return { species: s, common_name: c.common_name, edibility: c.edibility, note: c.note || "" };
    }),
    model: { name: m.meta.name, version: m.meta.version, variant: m.variant },
    source: "device",
    model_sha256: m.sha256,
    model_update: { status: m.update, problem: m.problem },
    probabilities: probs,
    scores: { energy, feature_score: feature, input_stats: stats },
  };
}

// The on-device answer for a photo (a File or Blob): the /predict answer's fields, plus source "device",
// model_sha256 (the model.json hash), model_update (see loadOnce), the full calibrated probabilities, the
// abstention scores and timings_ms (decode, preprocess, model)
export async function answer(blob, topK = TOP_K) {
  const m = await load();
  const t0 = performance.now();
  const img = await decode(blob, m.limits);
  const t1 = performance.now();
  const size = Number(m.meta.preprocessing.image_size);
  const x = preprocess(img.data, img.width, img.height, m.meta.preprocessing);
  const t2 = performance.now();
  const feeds = { [m.session.inputNames[0]]: new m.ort.Tensor("float32", x, [1, 3, size, size]) };
  const outputs = await m.session.run(feeds);
  const t3 = performance.now();
  return { ...answerOf(m, outputs, topK), timings_ms: { decode: t1 - t0, preprocess: t2 - t1, model: t3 - t2 } };
}

export async function info() {
  const m = await load();
  return {
    name: m.meta.name, version: m.meta.version, variant: m.variant, model_sha256: m.sha256, tried: m.tried,
    update: m.update, problem: m.problem, threads: m.ort.env.wasm.numThreads, isolated: Boolean(globalThis.crossOriginIsolated),
    classes: m.classes.map((c) => ({
      id: c.id, common_name: c.common_name, scientific_name: c.scientific_name, edibility: c.edibility,
    })),
  };
}

globalThis.mycolensField = { load, answer, info, FieldError };
