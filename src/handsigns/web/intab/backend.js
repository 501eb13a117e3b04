// Where the page's answers come from on the static site (`make site`): the exported model, run in this tab by ONNX
// Runtime Web (WebAssembly). Nothing is sent anywhere. Same interface and answers as the served backend.js
// (`handsigns serve`), computed as handsigns computes them:
// - decoding and resizing: the browser's (EXIF orientation applied, no colour management), drawn over white as
//   Pillow composites transparency (handsigns.imaging.to_rgb), resized by the canvas (docs/site.md measures it
//   against Pillow's);
// - probabilities at the card's temperature, softmax(log p / T) (handsigns.calibration);
// - the out-of-distribution verdict: the model's second output above the card's unsure_above (handsigns.ood);
// - the occlusion map: an eighth of the side, covered with the image's mean colour, every sixteenth, the fall of
//   the class's log-odds averaged over the squares covering each pixel (handsigns.saliency).
import * as ort from "./ort.wasm.min.mjs";

ort.env.wasm.numThreads = 1; // a static host sends no cross-origin isolation headers: no threads
ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;

const TOP = 3;
const UNREADABLE = "not an image this model can read (JPEG, PNG, BMP, WebP, ...)";

const modelCard = fetch("model.json").then((r) => {
  if (!r.ok) throw new Error(`model.json: HTTP ${r.status}`);
  return r.json();
});
const session = (async () => {
  if (typeof WebAssembly !== "object") {
    throw new Error("this browser runs no WebAssembly, which the model needs: try a current Chrome, Firefox or Safari");
  }
  return ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
})();

export async function card() {
  const c = await modelCard;
  return {
    model: "model.onnx (in this tab)",
    classes: c.classes,
    image_size: c.image_size,
    test_accuracy: c.metrics?.test?.accuracy ?? null,
    architecture: c.architecture?.arch ?? "net",
    best_epoch: c.best_epoch,
    start: c.start ?? null,
    ood: c.ood ? { test_flagged: c.ood.test_flagged, caught: c.ood.caught } : null,
  };
}

async function pixelsOf(blob, size) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(UNREADABLE);
  }
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, size, size);
  bitmap.close();
  return ctx.getImageData(0, 0, size, size).data; // RGBA, row by row
}

function batchOf(rgbaImages, size) {
  const plane = size * size;
  const data = new Uint8Array(rgbaImages.length * 3 * plane);
  rgbaImages.forEach((rgba, n) => {
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) data[n * 3 * plane + c * plane + i] = rgba[4 * i + c];
    }
  });
  return new ort.Tensor("uint8", data, [rgbaImages.length, 3, size, size]);
}

function logProbabilities(probs, classes, temperature) {
  // softmax(log p / T) in logs, float64, a zero probability as the smallest double (handsigns.calibration)
  const rows = [];
  for (let n = 0; n < probs.length / classes; n++) {
    const z = Array.from(probs.slice(n * classes, (n + 1) * classes), (p) => Math.log(Math.max(p, 2.2250738585072014e-308)) / temperature);
    const top = Math.max(...z);
    const norm = top + Math.log(z.reduce((s, v) => s + Math.exp(v - top), 0));
    rows.push(z.map((v) => v - norm));
  }
  return rows;
}

function roundHalfEven(x) {
  // NumPy's round: a half goes to the even neighbour (Math.round sends it up)
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function logOdds(logprobs, target) {
  const others = logprobs.filter((_, i) => i !== target);
  const top = Math.max(...others);
  return logprobs[target] - (top + Math.log(others.reduce((s, v) => s + Math.exp(v - top), 0)));
}

function windows(side, patch, stride) {
  const starts = [];
  for (let s = 0; s <= side - patch; s += stride) starts.push(s);
  if (starts[starts.length - 1] !== side - patch) starts.push(side - patch);
  return starts;
}

async function occlusion(model, c, rgba, target, evidence) {
  const size = c.image_size;
  const temperature = c.calibration?.temperature ?? 1;
  const patch = Math.max(2, Math.floor(size / 8));
  const stride = Math.max(1, Math.floor(patch / 2));
  const fill = [0, 1, 2].map((c) => {
    let sum = 0;
    for (let i = 0; i < size * size; i++) sum += rgba[4 * i + c];
    return roundHalfEven(sum / (size * size)); // the mean colour: removes what is there, not the brightness
  });
  const corners = [];
  for (const y of windows(size, patch, stride)) for (const x of windows(size, patch, stride)) corners.push([y, x]);
  const copies = corners.map(([y, x]) => {
    const copy = rgba.slice();
    for (let r = y; r < y + patch; r++) {
      for (let c = x; c < x + patch; c++) for (let k = 0; k < 3; k++) copy[4 * (r * size + c) + k] = fill[k];
    }
    return copy;
  });
  const out = await model.run({ [c.input.name]: batchOf(copies, size) }, [c.output.name]);
  const rows = logProbabilities(out[c.output.name].data, c.classes.length, temperature);
  const heat = new Float64Array(size * size);
  const cover = new Float64Array(size * size);
  corners.forEach(([y, x], n) => {
    const drop = Math.max(evidence - logOdds(rows[n], target), 0);
    for (let r = y; r < y + patch; r++) {
      for (let c = x; c < x + patch; c++) {
        heat[r * size + c] += drop;
        cover[r * size + c] += 1;
      }
    }
  });
  let top = 0;
  for (let i = 0; i < heat.length; i++) top = Math.max(top, (heat[i] /= cover[i]));
  return heat.map((h) => (top > 0 ? h / top : h));
}

function pngUrl(rgba, size, heat) {
  // the pixels, or the pixels under their map: transparent where 0, through red to yellow at 1 (saliency.heatmap)
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const image = new ImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    const h = heat ? heat[i] : 0;
    const hot = [Math.min(Math.max(2 * h, 0), 1) * 255, Math.min(Math.max(2 * h - 1, 0), 1) * 255, 0];
    for (let c = 0; c < 3; c++) image.data[4 * i + c] = roundHalfEven(rgba[4 * i + c] * (1 - 0.65 * h) + hot[c] * 0.65 * h);
    image.data[4 * i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas.toDataURL("image/png");
}

export async function label(blob) {
  const c = await modelCard;
  const model = await session;
  const size = c.image_size;
  const temperature = c.calibration?.temperature ?? 1;
  const rgba = await pixelsOf(blob, size);
  const wanted = [c.output.name, ...(c.ood ? [c.ood.output] : [])];
  const out = await model.run({ [c.input.name]: batchOf([rgba], size) }, wanted);
  const raw = out[c.output.name].data;
  const logprobs = logProbabilities(raw, c.classes.length, temperature)[0];
  // at T = 1 the network's own probabilities, as handsigns.predict gives them; else softmax(log p / T)
  const shown = c.classes.map((_, i) => (temperature === 1 ? raw[i] : Math.exp(logprobs[i])));
  const probabilities = Object.fromEntries(c.classes.map((name, i) => [name, shown[i]]));
  const ranked = c.classes.map((name, i) => ({ label: name, probability: shown[i], i }));
  ranked.sort((a, b) => b.probability - a.probability || a.i - b.i);
  const best = ranked[0];
  const score = c.ood ? out[c.ood.output].data[0] : null;
  const heat = await occlusion(model, c, rgba, best.i, logOdds(logprobs, best.i));
  return {
    label: best.label,
    probability: best.probability,
    top: ranked.slice(0, TOP).map(({ label, probability }) => ({ label, probability })),
    probabilities,
    ood_score: score,
    unsure: score !== null && score > c.ood.unsure_above,
    model_input: pngUrl(rgba, size, null),
    looks: pngUrl(rgba, size, heat),
  };
}
