"""DVC stage `evaluate`: exact metrics of the best model on val and test, and its calibration.

Outputs: metrics/eval.json (the headline: val/test accuracy, macro-F1, loss, expected calibration error) and
metrics/eval/: calibration.json (the temperature fitted on val, test's ECE after it),
per_class_{val,test}.csv (precision, recall, F1, support per class; drives the per-class F1 plot),
predictions_{val,test}.csv (per image: actual, predicted, probability; drives the confusion matrices),
reliability_test{,_calibrated}.csv (the reliability diagram's bins before and after temperature scaling),
misclassified_test.png (a gallery of the test errors), each beside its occlusion map (where the model looked),
ood.json (the out-of-distribution check fitted on train and val: its threshold, the val and test images it flags,
what it catches of each set of handsigns.outliers; eval.json's ``ood`` holds the headline);
and metrics/gallery/explained_test.png (two right test images a class, each beside its map; in DVC's cache).
"""

from handsigns import ood
from handsigns.checkpoint import load_model
from handsigns.dataset import load_splits, read_classes
from handsigns.errors import UserError, run_main
from handsigns.evaluate import SAMPLE_PER_CLASS, TorchScorer, calibrate, evaluate_split, explained_rows, gallery
from handsigns.files import atomic_path, write_json
from handsigns.params import load
from handsigns.params.memory import MemoryParams
from handsigns.params.recipe import RecipeParams
from handsigns.paths import BEST, CALIBRATION, EVAL_DETAILS, EVAL_METRICS, EXPLAINED, INDEX, OOD_REPORT


def main() -> None:
    recipe = load(RecipeParams)
    model, ckpt = load_model(BEST)
    classes = read_classes()
    if classes != ckpt["classes"]:
        raise UserError(f"{INDEX}/classes.json differs from the model's classes; re-run the pipeline (dvc repro)")
    results, per_class, predictions, logprobs = {}, {}, {}, {}
    batch = recipe.evaluate.batch_size
    names = ("val", "test")
    loaded = (*names, "train") if recipe.ood.check else names
    budget, size = load(MemoryParams).budget_gb, ckpt["model"]["image_size"]
    splits = dict(zip(loaded, load_splits(loaded, size, classes, budget, "evaluate"), strict=True))
    for name in names:  # everything computed before anything is written
        split = splits[name]
        if len(split) == 0:
            raise UserError(f"the {name} split is empty; check {INDEX}/{name}.csv (dvc repro split)")
        results[name], per_class[name], predictions[name], logprobs[name] = evaluate_split(model, split, classes, batch)
    calibrated, tables = calibrate(*((logprobs[n], splits[n].labels.numpy()) for n in names))
    for name in names:
        tables |= {f"per_class_{name}": per_class[name], f"predictions_{name}": predictions[name]}
        table = predictions[name]
        errors = int((table["actual"] != table["predicted"]).sum())
        print(
            f"evaluate: {name} accuracy {results[name]['accuracy']:.4f} ({errors} errors of {len(table)}), "
            f"macro-F1 {results[name]['macro_f1']:.4f}"
        )
    checked, _ = ood.report(model, splits, len(classes), recipe.ood, size, batch)
    if checked["check"]:
        results["ood"] = {k: checked[k] for k in ood.HEADLINE}
        print(f"evaluate: {ood.summary(checked)} ({OOD_REPORT})")
    print(
        f"evaluate: test expected calibration error {results['test']['ece']:.4f}, {calibrated['test_ece']:.4f} "
        f"at temperature {calibrated['temperature']:g} (fitted on val; predict applies it)"
    )
    for stem, table in tables.items():
        with atomic_path(EVAL_DETAILS / f"{stem}.csv") as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
    test, scorer = predictions["test"], TorchScorer(model, batch)
    shown = explained_rows(test)
    gallery(
        test,
        splits["test"].images,
        shown["misclassified"],
        EVAL_DETAILS / "misclassified_test.png",
        f"misclassified test images: {len(shown['misclassified'])} of {len(test)} (beside: where the model looked)",
        scorer,
    )
    gallery(
        test,
        splits["test"].images,
        shown["correct"],
        EXPLAINED,
        f"where the model looks: the first {SAMPLE_PER_CLASS} right test images of each class",
        scorer,
    )
    write_json(CALIBRATION, calibrated)
    write_json(OOD_REPORT, checked)
    write_json(EVAL_METRICS, results)


if __name__ == "__main__":
    run_main(main)
