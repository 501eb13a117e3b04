# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Del cuaderno del curso al pipeline: SIGNS paso a paso
#
# [![Abrir en Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/handsigns/blob/main/notebooks/curso.ipynb)
#
# El "Curso de Deep Learning con Pytorch" enseña, celda a celda, a clasificar las fotos SIGNS: una mano que
# muestra de 0 a 5 dedos. Este cuaderno sigue los mismos pasos, y en cada uno dice dónde vive ese paso en el
# proyecto `handsigns`, que los convierte en un pipeline que cualquiera puede repetir byte a byte:
#
# 1. Tensores, y una imagen SIGNS como tensor.
# 2. El conjunto de datos que construye el pipeline: el índice y el informe de copias.
# 3. La red de los apuntes (`Net`) y la que usa el proyecto por defecto.
# 4. Un entrenamiento corto aquí mismo, con las curvas dibujadas en el cuaderno.
# 5. Lo mismo con DVC: `dvc repro`, un experimento con otra tasa de aprendizaje, la tabla y las gráficas.
# 6. La ficha del modelo, una predicción sobre **tu propia foto** y la galería de errores.
#
# Funciona en Colab, en Jupyter (`make notebook`) y en un portátil sin GPU: unos minutos en total.

# %% [markdown]
# ## 0. Preparación
#
# En Colab, la celda siguiente clona el proyecto y lo instala **encima del PyTorch que Colab ya trae** (no
# descarga otro). En tu ordenador, `make notebook` ya lo instaló todo: la celda solo se sitúa en la raíz del
# proyecto. Si abriste el cuaderno desde tu fork en GitHub, pon su dirección en `REPO_URL`.

# %%
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/OWNER/handsigns"  # el repositorio del proyecto (o tu fork)

if "google.colab" in sys.modules:
    if not Path("handsigns/dvc.yaml").exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "handsigns"], check=True)
    os.chdir("handsigns")
    # Sin `-e` (así se importa sin reiniciar) y sin el lock: el torch de Colab cumple `torch>=2.4` y se queda.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", ".[pipeline]"], check=True)
    subprocess.run(["git", "config", "user.email", "tu@ejemplo.org"], check=True)  # dvc exp guarda commits
    subprocess.run(["git", "config", "user.name", "Estudiante"], check=True)
else:
    os.chdir(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "dvc.yaml").exists()))
# `dvc` y las etapas usan el Python de este kernel
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
print("proyecto en", Path.cwd())

# %% [markdown]
# ## 1. Tensores
#
# Un tensor es un array de números con forma (`shape`) y tipo (`dtype`), que puede vivir en la CPU o en la GPU.
# Todo lo que entra y sale de una red es un tensor.

# %%
import torch

x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
print(x.shape, x.dtype)
print(x * 2 + 1)
print(x @ x.T)  # producto de matrices: 2x3 por 3x2
print("GPU disponible:", torch.cuda.is_available())

# %% [markdown]
# Una foto en color es un tensor de 3 canales (rojo, verde, azul) de 64 × 64 píxeles. El proyecto trae los datos
# SIGNS en `datasets/64x64_SIGNS.zip`; leemos una imagen sin descomprimir nada:

# %%
import io
import zipfile

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

with zipfile.ZipFile("datasets/64x64_SIGNS.zip") as z:
    nombre = sorted(n for n in z.namelist() if n.endswith(".jpg"))[0]
    foto = Image.open(io.BytesIO(z.read(nombre))).convert("RGB")
t = torch.from_numpy(np.array(foto)).permute(2, 0, 1)  # alto x ancho x canal -> canal x alto x ancho
print(nombre, tuple(t.shape), t.dtype, "valores de", int(t.min()), "a", int(t.max()))
plt.figure(figsize=(2, 2))
plt.imshow(foto)
plt.title(f"etiqueta {Path(nombre).name[0]}")
plt.axis("off")
plt.show()

# %% [markdown]
# ## 2. El conjunto de datos que construye el pipeline
#
# En los apuntes, una clase `SIGNSDataset` lista la carpeta y abre cada foto. Aquí lo hacen dos etapas de DVC:
# `download` (extrae el zip y anota su sha256) y `split` (indexa cada imagen, busca copias y decide
# train/val/test). `dvc repro split` ejecuta las dos; si ya se ejecutaron con estos datos, no hace nada.

# %% language="bash"
# dvc repro split

# %% [markdown]
# El resultado es un índice en `data/index/`: una fila por imagen, con su clase y su sha256.

# %%
import json

import pandas as pd

from handsigns.dataset import read_classes

clases = read_classes()  # data/index/classes.json: los nombres de las carpetas, en orden
indice = {s: pd.read_csv(f"data/index/{s}.csv", dtype=str) for s in ("train", "val", "test")}
print("clases:", clases)
pd.DataFrame({s: df["class"].value_counts().sort_index() for s, df in indice.items()})

# %% [markdown]
# SIGNS trae fotos repetidas: la misma foto en train y en test haría que el test midiera memoria, no
# aprendizaje. `split` las encuentra (copias exactas y la misma foto recomprimida o ligeramente distinta) y
# las quita de train; el informe está en `data/index/duplicates.csv` y `metrics/data/split.json`.

# %%
informe = json.loads(Path("metrics/data/split.json").read_text())
copias = pd.read_csv("data/index/duplicates.csv")
print("imágenes por split:", informe["images"], "| excluidas:", informe["excluded"])
print("parejas de copias encontradas:", len(copias))
copias.groupby(["kind", "split_a", "split_b"]).size().rename("parejas").to_frame()

# %% [markdown]
# Doce fotos de train con su etiqueta:

# %%
fig, ejes = plt.subplots(2, 6, figsize=(9, 3.4))
for eje, (_, fila) in zip(ejes.flat, indice["train"].sample(12, random_state=0).iterrows(), strict=True):
    eje.imshow(Image.open(Path("data/raw") / fila["path"]))
    eje.set_title(fila["class"])
    eje.axis("off")
plt.show()

# %% [markdown]
# La clase `SIGNSDataset` de los apuntes, escrita sobre el índice. El pipeline no abre cada foto en cada
# época: `load_split` las decodifica **una vez** en un único tensor `uint8`, y el entrenamiento toma los lotes
# de ahí (SIGNS cabe en 14 MB).

# %%
from torch.utils.data import DataLoader, Dataset

from handsigns.dataset import load_split
from handsigns.params import load
from handsigns.params.recipe import RecipeParams


class SIGNSDataset(Dataset):
    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return self.split.images[i].float() / 255, self.split.labels[i]


receta = load(RecipeParams)  # params.yaml: cada hiperparámetro del proyecto
lado = receta.model.image_size  # las fotos se escalan a lado x lado
train = load_split("train", lado, clases)
val = load_split("val", lado, clases)
imagenes, etiquetas = next(iter(DataLoader(SIGNSDataset(train), batch_size=8, shuffle=True)))
print("todo train:", tuple(train.images.shape), train.images.dtype)
print("un lote:", tuple(imagenes.shape), "etiquetas", etiquetas.tolist())

# %% [markdown]
# ## 3. La red
#
# La `Net` de los apuntes: tres convoluciones 3×3 (32, 64 y 128 canales), cada una con max-pooling 2×2 y
# ReLU, y dos capas lineales. El proyecto usa la misma red con *batch norm* (como CS230) y *dropout*: así la
# describe `params.yaml`, en la sección `model`. Algunos valores dicen `auto`: el proyecto los decide según los
# datos. El ancho (`num_channels`), según el número de clases: hasta 10, la mitad de canales (16, 32 y 64; en
# SIGNS, la misma precisión con menos de la mitad del trabajo por imagen). La regularización, según el tamaño de
# train (más cuanto menos datos; con SIGNS, los de siempre).

# %%
from handsigns.adapt import resolve
from handsigns.model import Net, build_net

receta, decidido = resolve(receta, len(train), len(clases))
print("decidido para", len(train), "imágenes de train:", decidido)

de_los_apuntes = Net(num_classes=len(clases), image_size=lado, num_channels=32)  # sin batch norm ni dropout
por_defecto = build_net(len(clases), receta.model)
for nombre_red, red in (("apuntes", de_los_apuntes), ("por defecto", por_defecto)):
    print(f"{nombre_red}: {sum(p.numel() for p in red.parameters()):,} parámetros")
print(por_defecto)
print("salida para un lote:", tuple(de_los_apuntes(imagenes).shape), "(log-probabilidades, una por clase)")

# %% [markdown]
# ## 4. Un entrenamiento corto, aquí
#
# El bucle de los apuntes (pérdida, `backward`, paso del optimizador, precisión en val por época) vive en
# `handsigns.train.fit`: la etapa `train` de DVC llama a esa misma función. Aquí la llamamos con pocas
# épocas; las curvas las anota DVCLive, como en la etapa, y las dibujamos.

# %%
import dataclasses
import tempfile

from dvclive import Live

from handsigns.train import fit

EPOCAS = int(os.environ.get("CURSO_EPOCAS", "5"))  # unos segundos por época en una CPU
corta = dataclasses.replace(receta, epochs=EPOCAS, train=dataclasses.replace(receta.train, min_steps=0))
carpeta = Path(tempfile.mkdtemp())
with Live(str(carpeta / "curvas"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
    resumen = fit(corta, clases, train, val, live=live, best_path=carpeta / "best.pt")
print("mejor precisión en val:", resumen["best"]["accuracy"], "en la época", resumen["quality"]["best_epoch"])

# %%
fig, ejes = plt.subplots(1, 2, figsize=(9, 3))
for eje, medida in zip(ejes, ("loss", "accuracy"), strict=True):
    for parte in ("train", "val"):
        curva = pd.read_csv(carpeta / f"curvas/plots/metrics/{parte}/{medida}.tsv", sep="\t")
        eje.plot(curva["step"], curva[medida], marker="o", label=parte)
    eje.set_xlabel("época")
    eje.set_title(medida)
    eje.legend()
plt.show()

# %% [markdown]
# ## 5. Lo mismo con DVC
#
# `dvc repro` ejecuta todo el pipeline (`download → split → train → evaluate → export`) con los valores de
# `params.yaml`, y solo rehace las etapas cuyo código, datos o parámetros cambiaron. Si ya ejecutaste
# `make repro`, termina en un momento; si no, entrena (un par de minutos en una CPU).

# %% language="bash"
# dvc repro

# %% [markdown]
# Un experimento: la misma receta con otra tasa de aprendizaje. `--queue` lo prepara y `--run-all` lo ejecuta en
# una copia aparte: tu espacio de trabajo y tu commit no cambian. Después, `dvc exp show` pone lado a lado tu
# ejecución (`workspace`), tu commit y el experimento; aquí, solo `lr` y las precisiones (sin `--drop` ni
# `--keep`, todas las columnas).

# %% language="bash"
# dvc exp run --queue -S lr=0.01
# dvc exp run --run-all
# dvc exp show --md --precision 3 --drop '.*' --keep '^(Experiment|lr|test\.accuracy|val\.accuracy)$'

# %% [markdown]
# Las curvas de entrenamiento de tu ejecución y del experimento, en una página HTML (`dvc plots diff` compara
# con el experimento que nombres):

# %% language="bash"
# dvc plots show --out graficas --quiet && echo "abre graficas/index.html en el navegador"

# %% [markdown]
# ## 6. La ficha del modelo, tu foto y los errores
#
# La etapa `export` escribe el modelo en ONNX y su ficha (`models/model.json`): clases, tamaño de entrada, de
# qué datos y con qué parámetros salió, y sus métricas.

# %%
ficha = json.loads(Path("models/model.json").read_text())
print("clases:", ficha["classes"], "| tamaño de entrada:", ficha["image_size"])
print("métricas:", json.dumps(ficha.get("metrics"), indent=1))

# %% [markdown]
# `Predictor` usa ese modelo con ONNX Runtime, sin PyTorch. Prueba con **una foto tuya**: una mano con 0 a 5
# dedos, de frente, sobre un fondo liso. En Colab, la celda te pide subirla; en tu ordenador, pon su ruta en
# `MI_FOTO`. Sin foto, usa una del test. Si la foto no se parece a las que aprendió (una cara, una taza),
# `prediccion.unsure` es `True`: su etiqueta es una suposición (docs/trust.md).

# %%
from handsigns import Predictor

MI_FOTO = None  # por ejemplo "mi_mano.jpg"
if "google.colab" in sys.modules and MI_FOTO is None:
    from google.colab import files

    MI_FOTO = next(iter(files.upload()), None)
if MI_FOTO is None:
    MI_FOTO = Path("data/raw") / indice["test"]["path"].iloc[0]

prediccion = Predictor("models/model.onnx").predict(MI_FOTO)
plt.figure(figsize=(2.5, 2.5))
plt.imshow(Image.open(MI_FOTO).convert("RGB"))
plt.title("no parece una mano" if prediccion.unsure else f"{prediccion.label} ({prediccion.probability:.0%})")
plt.axis("off")
plt.show()
for etiqueta, p in prediccion.top(3):
    print(f"{etiqueta}: {p:.1%}")

# %% [markdown]
# La etapa `evaluate` guarda las imágenes de test que el modelo falla, con la etiqueta real y la que dijo:

# %%
from IPython.display import Image as Figura

Figura(filename="metrics/eval/misclassified_test.png")

# %% [markdown]
# ## Y ahora
#
# - Tus propias fotos, una carpeta por clase: `make repro SOURCE=ruta/a/tus/fotos` (README.es.md).
# - Cambia cualquier valor de `params.yaml` en un experimento: `dvc exp run -S model.dropout=0.5`.
# - Qué hace cada etapa: `docs/architecture.md`.
