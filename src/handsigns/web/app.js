// The demo page: label an image (dropped, chosen or taken with the webcam) and show the answer. backend.js says
// where answers come from: the server (`handsigns serve`) or the model running in the tab (`make site`).
import * as backend from "./backend.js";

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

function showAnswer(answer) {
  $("error").hidden = true;
  $("seen").src = answer.model_input;
  $("looks").src = answer.looks;
  $("label").textContent = answer.label;
  $("probability").textContent = percent(answer.probability);
  // Unlike the training images (handsigns.ood): no label is the honest answer; the bars stay, as guesses.
  $("answer").hidden = answer.unsure;
  $("unsure").hidden = !answer.unsure;
  $("unsure-score").textContent = answer.unsure ? `(score ${answer.ood_score.toFixed(2)}; above 1 is unlike them)` : "";
  const top = $("top");
  top.replaceChildren();
  for (const { label, probability } of answer.top) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = percent(probability);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(probability);
    item.append(name, bar, value);
    top.append(item);
  }
  $("result").hidden = false;
}

let answered = 0; // answers shown so far: tests wait on body[data-answered]

async function send(blob) {
  try {
    showAnswer(await backend.label(blob));
  } catch (err) {
    $("result").hidden = true;
    showError(err.message);
  }
  document.body.dataset.answered = String(++answered);
}

async function showCard() {
  const facts = await backend.card();
  const rows = [
    ["classes", facts.classes.join(", ")],
    ["input", `${facts.image_size} x ${facts.image_size} RGB`],
    ["test accuracy", facts.test_accuracy == null ? "not measured" : percent(facts.test_accuracy)],
    ["architecture", `${facts.architecture}, best epoch ${facts.best_epoch}`],
    ["started from", facts.start ? facts.start.source : "random weights (trained from scratch)"],
    [
      "unlike the training images",
      facts.ood
        ? `said so: ${percent(facts.ood.test_flagged)} of test images, ${percent(facts.ood.caught)} of other pictures`
        : "not checked (exported without the check)",
    ],
    ["file", facts.model],
  ];
  const list = $("facts");
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) send(event.target.files[0]);
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) send(event.dataTransfer.files[0]);
});

$("start-camera").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    $("video").srcObject = stream;
    $("video").hidden = false;
    $("capture").hidden = false;
  } catch (err) {
    showError(`no webcam (${err.message}); drop a photo instead`);
  }
});

$("capture").addEventListener("click", () => {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => send(blob), "image/jpeg", 0.92);
});

showCard().catch((err) => showError(`cannot read the model card (${err.message})`));
