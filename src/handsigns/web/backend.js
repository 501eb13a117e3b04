// Where the page's answers come from, for `handsigns serve`: the server, which labels an upload with the exported
// ONNX model (POST /predict) and describes it (GET /card). The static site (`make site`) has its own backend.js,
// same interface, that runs the model in the tab.
export async function card() {
  return (await fetch("card")).json();
}

export async function label(blob) {
  let response;
  try {
    response = await fetch("predict", { method: "POST", body: blob });
  } catch (err) {
    throw new Error(`no answer from the server (${err.message}); is handsigns serve still running?`);
  }
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  return answer;
}
