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

from handsigns.checkpoint import load_model
from handsigns.dataset import load_splits, read_classes
from handsigns.errors import UserError, run_main
from handsigns.evaluate import SCORED, evaluate, galleries
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
    names = (*SCORED, "train") if recipe.ood.check else SCORED
    budget, size = load(MemoryParams).budget_gb, ckpt["model"]["image_size"]
    splits = dict(zip(names, load_splits(names, size, classes, budget, "evaluate"), strict=True))
    found = evaluate(model, splits, classes, recipe, size)
    for stem, table in found.tables.items():
        with atomic_path(EVAL_DETAILS / f"{stem}.csv") as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
    galleries(
        model,
        splits["test"],
        found.tables["predictions_test"],
        recipe.evaluate.batch_size,
        misclassified=EVAL_DETAILS / "misclassified_test.png",
        explained=EXPLAINED,
    )
    write_json(CALIBRATION, found.calibration)
    write_json(OOD_REPORT, found.ood)
    write_json(EVAL_METRICS, found.metrics)


if __name__ == "__main__":
    run_main(main)
