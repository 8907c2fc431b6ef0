"""The catalogue of named public checkpoints (one :class:`ZooEntry` per checkpoint), as data.

Each entry names the architecture by its registry / model-card name, the number of output
channels, the preprocessing it needs where it differs from the architecture's official one
(plain fields, mapped onto the card's preprocessing by :meth:`ZooEntry.preprocessing_overrides`),
what its prediction is, license, training data, paper, published scores (keys of
:mod:`salseg.zoo.published`) and one or more sources, tried in order.

Checksums (every source has one, or is explicitly unpinned):

* rembg's GitHub release ``v0.0.0``: the md5 sums that rembg itself pins (rembg/sessions/*.py);
* official Google Drive files publish no checksum.  Where several independent Hugging Face Hub
  copies of the same file agree on the Git LFS sha256, that sha256 pins the Drive source as well
  (the copies are listed in ``pin_note``); otherwise the source is ``checksum=None``
  (unpinned): the sha256 of the first verified download is recorded in the cache and a later
  download that differs is refused (trust on first use, see :mod:`salseg.zoo.cache`);
* Hugging Face Hub files: the Git LFS sha256 the Hub shows for that file.

Preprocessing sources: rembg's sessions (``rembg/sessions/*.py``: LANCZOS resize, division by
the image maximum, then the session's mean/std) for files that only rembg publishes, the
official inference scripts otherwise (the architecture's card).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REMBG = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
HF = "https://huggingface.co/"
FORMATS = ("pth", "onnx", "safetensors")


@dataclass(frozen=True)
class Source:
    """One place a checkpoint file can be downloaded from."""

    url: str
    checksum: str | None  # "md5:<hex>" / "sha256:<hex>"; None = unpinned (trust on first use)
    filename: str  # the original file name (also the name looked up on a mirror)
    origin: str  # who publishes it, in words
    pin_note: str = ""  # where the checksum comes from

    @property
    def format(self) -> str:
        return PurePosixPath(self.filename).suffix.lstrip(".").lower()

    @property
    def pinned(self) -> bool:
        return self.checksum is not None


@dataclass(frozen=True)
class ZooEntry:
    """A named checkpoint: what it is, how to feed it, where to get it."""

    name: str
    architecture: str  # registry / model-card name: u2net, u2netp, isnet
    description: str
    sources: tuple[Source, ...]
    license: str
    training_data: str
    paper: str
    out_ch: int = 1
    # preprocessing overrides (None = the architecture's official value)
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale: str | None = None  # "max" (divide by the image maximum) or "255"
    prediction: str = "sigmoid"  # "sigmoid": the card's prediction map; "argmax": class map
    classes: tuple[str, ...] = ()  # class names for prediction == "argmax"
    commercial_use: bool = True
    published: tuple[str, ...] = ()  # keys into salseg.zoo.published.TABLES
    size_mb: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def preprocessing_overrides(self) -> dict:
        """The preprocessing fields this entry overrides (``dataclasses.replace`` keywords)."""
        out: dict = {}
        for key in ("input_size", "mean", "std", "scale"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @property
    def model_kwargs(self) -> dict:
        """Keyword arguments of the network constructor (``create_model(arch, **kw)``)."""
        return {"out_ch": self.out_ch} if self.out_ch != 1 else {}


def _rembg(filename: str, md5: str) -> Source:
    return Source(REMBG + filename, f"md5:{md5}", filename, "rembg GitHub release v0.0.0 (ONNX)",
                  "md5 pinned by rembg's session code")


U2NET_PAPER = ("Qin et al., U2-Net: Going Deeper with Nested U-Structure for Salient Object "
               "Detection, Pattern Recognition 106 (2020) 107404")
DIS_PAPER = "Qin et al., Highly Accurate Dichotomous Image Segmentation, ECCV 2022"
U2NET_LICENSE = "Apache-2.0 (U-2-Net repository)"
DIS_LICENSE = "Apache-2.0 (DIS repository)"

U2NET_SHA = "sha256:10025a17f49cd3208afc342b589890e402ee63123d6f2d289a4a0903695cce58"
U2NETP_SHA = "sha256:e7567cde013fb64813973ce6e1ecc25a80c05c3ca7adbc5a54f3c3d90991b854"
ISNET_GU_SHA = "sha256:9e1aafea58f0b55d0c35077e0ceade6ba1ba2bce372fd4f8f77215391f3fac13"

BIREFNET_PAPER = ("Zheng et al., Bilateral Reference for High-Resolution Dichotomous Image "
                  "Segmentation, CAAI Artificial Intelligence Research 2024 (arXiv 2401.03407)")
BIREFNET_LICENSE = "MIT (ZhengPeng7/BiRefNet)"
BIREFNET_UNPINNED = ("unpinned: no checksum could be checked when this entry was written (the "
                     "Hub shows the Git LFS sha256); trust on first use")
BIREFNET_NOTE = ("File name as the Hub's PyTorchModelHubMixin saves it (model.safetensors); that "
                 "the Hub checkpoint uses exactly the official state-dict keys was not verified "
                 "when this entry was written: a mismatch is refused by the strict load, naming "
                 "the keys.")


def _birefnet_hub(repo: str) -> Source:
    return Source(f"{HF}{repo}/resolve/main/model.safetensors", None, "model.safetensors",
                  f"official (Hugging Face Hub, {repo})", BIREFNET_UNPINNED)


ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="u2net",
        architecture="u2net",
        description="U2-Net (176.3 MB), salient object detection; the paper's model",
        sources=(
            Source(GDRIVE + "1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ", U2NET_SHA, "u2net.pth",
                   "official (U-2-Net README, Google Drive)",
                   "sha256 of three agreeing Hugging Face copies: damli/u2net, "
                   "netradrishti/u2net-saliency, lilpotat/pytorch3d (size 176290937)"),
            Source(HF + "damli/u2net/resolve/main/u2net.pth", U2NET_SHA, "u2net.pth",
                   "Hugging Face copy (damli/u2net)", "Git LFS sha256 shown by the Hub"),
            _rembg("u2net.onnx", "60024c5c889badc19c04ad937298a77b"),
        ),
        license=U2NET_LICENSE,
        training_data="DUTS-TR (10553 images)",
        paper=U2NET_PAPER,
        published=("u2net_paper/U2-Net",),
        size_mb=176.3,
    ),
    ZooEntry(
        name="u2netp",
        architecture="u2netp",
        description="U2-NetP (4.7 MB), the small U2-Net of the paper (U2-Net-dagger)",
        sources=(
            Source(GDRIVE + "1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy", U2NETP_SHA, "u2netp.pth",
                   "official (U-2-Net README, Google Drive)",
                   "sha256 of the Hugging Face copy netradrishti/u2net-saliency (size 4683258)"),
            Source(HF + "netradrishti/u2net-saliency/resolve/main/models/u2netp.pth", U2NETP_SHA,
                   "u2netp.pth", "Hugging Face copy (netradrishti/u2net-saliency)",
                   "Git LFS sha256 shown by the Hub"),
            _rembg("u2netp.onnx", "8e83ca70e441ab06c318d82300c84806"),
        ),
        license=U2NET_LICENSE,
        training_data="DUTS-TR (10553 images)",
        paper=U2NET_PAPER,
        published=("u2net_paper/U2-NetP",),
        size_mb=4.7,
    ),
    ZooEntry(
        name="u2net_human_seg",
        architecture="u2net",
        description="U2-Net fine-tuned for human segmentation",
        sources=(
            _rembg("u2net_human_seg.onnx", "c09ddc2e0104f800e3e1bb4652583d1f"),
            Source(GDRIVE + "1m_Kgs91b21gayc2XLW0ou8yugAIadWVP", None, "u2net_human_seg.pth",
                   "official (U-2-Net README, Google Drive)",
                   "unpinned: no published checksum and no agreeing copies found"),
        ),
        license=U2NET_LICENSE,
        training_data="Supervisely Person dataset (per the U-2-Net README)",
        paper=U2NET_PAPER,
        size_mb=176.3,
    ),
    ZooEntry(
        name="isnet",
        architecture="isnet",
        description="IS-Net trained on DIS5K (the DIS paper's academic isnet.pth)",
        sources=(
            Source(HF + "Superlang/ImageProcess/resolve/main/isnet.pth",
                   "sha256:ea0889743a78391b48d6b7c40b4def963ee329cb10934c75aa32481dc5af9c61",
                   "isnet.pth", "Hugging Face copy (Superlang/ImageProcess)",
                   "Git LFS sha256 shown by the Hub (size 176597693)"),
        ),
        license=DIS_LICENSE,
        training_data="DIS5K DIS-TR (3000 images)",
        paper=DIS_PAPER,
        published=("dis_paper/IS-Net",),
        size_mb=176.6,
        notes=(
            "The DIS README links 'isnet.pth' to the same Google Drive file as "
            "isnet-general-use.pth (Hugging Face copies of both names share one sha256), so no "
            "official, separately downloadable academic isnet.pth could be pinned. The only "
            "source is a community copy whose identity with the paper's weights is NOT "
            "confirmed; compare its scores with the paper rows (salseg-eval ckpt=isnet) before "
            "relying on it, or place your own isnet.pth in the cache (salseg-models path isnet).",
        ),
    ),
    ZooEntry(
        name="isnet-general-use",
        architecture="isnet",
        description="IS-Net optimised for general use (background removal)",
        sources=(
            Source(GDRIVE + "1XHIzgTzY5BQHw140EDIgwIb53K659ENH", ISNET_GU_SHA,
                   "isnet-general-use.pth", "official (DIS README, Google Drive)",
                   "sha256 of agreeing Hugging Face copies: NimaBoscarino/IS-Net_DIS-general-use, "
                   "AlekseyKorshuk/isnet-general-use (size 176579397)"),
            Source(HF + "NimaBoscarino/IS-Net_DIS-general-use/resolve/main/isnet-general-use.pth",
                   ISNET_GU_SHA, "isnet-general-use.pth",
                   "Hugging Face copy (NimaBoscarino/IS-Net_DIS-general-use)",
                   "Git LFS sha256 shown by the Hub"),
            _rembg("isnet-general-use.onnx", "fc16ebd8b0c10d971d3513d564d01e29"),
        ),
        license=DIS_LICENSE,
        training_data="not published (DIS README: 'optimized model for general use')",
        paper=DIS_PAPER,
        size_mb=176.6,
    ),
    ZooEntry(
        name="isnet-anime",
        architecture="isnet",
        description="IS-Net for anime character segmentation (rembg's isnet-anime)",
        sources=(_rembg("isnet-anime.onnx", "6f184e756bb3bd901c8849220a83e38e"),),
        license="Apache-2.0 (SkyTNT/anime-segmentation, the training project rembg credits)",
        training_data="anime-segmentation dataset (SkyTNT/anime-segmentation)",
        paper=DIS_PAPER + " (architecture)",
        mean=IMAGENET_MEAN,
        std=(1.0, 1.0, 1.0),
        scale="max",
        notes=("Preprocessing as rembg's dis_anime session: divide by the image maximum, mean "
               "(0.485, 0.456, 0.406), std 1.0, 1024x1024.",),
    ),
    ZooEntry(
        name="silueta",
        architecture="u2net",
        description="rembg's silueta: U2-Net reduced to 43 MB",
        sources=(_rembg("silueta.onnx", "55e59e0d8062d2f5d013f4725ee84782"),),
        license="MIT (rembg)",
        training_data="not published",
        paper=U2NET_PAPER + " (architecture)",
        size_mb=43.0,
        notes=("rembg describes silueta as 'same as u2net but the size is reduced to 43Mb'; the "
               "U2-Net architecture is therefore assumed and checked by the conversion (torch "
               "vs onnxruntime on a probe input) on first use.",),
    ),
    ZooEntry(
        name="u2net_cloth_seg",
        architecture="u2net",
        description="U2-Net with 4 output channels for clothes parsing "
                    "(background / upper body / lower body / full body)",
        sources=(
            _rembg("u2net_cloth_seg.onnx", "2434d1f3cb744e0e49386c906e5a08bb"),
            Source(GDRIVE + "1mhF3yqd7R-Uje092eypktNl-RoZNuiCJ", None,
                   "cloth_segm_u2net_latest.pth",
                   "official (levindabhi/cloth-segmentation README, Google Drive)",
                   "unpinned: no published checksum and no agreeing copies found"),
        ),
        license="MIT (levindabhi/cloth-segmentation)",
        training_data="45k images of iMaterialist (Fashion) 2019 at FGVC6, 42 categories merged "
                      "into 3, resized to 768x768 (levindabhi/cloth-segmentation README)",
        paper=U2NET_PAPER + " (architecture)",
        out_ch=4,
        input_size=(768, 768),
        prediction="argmax",
        classes=("background", "upper", "lower", "full"),
        notes=("Preprocessing as rembg's u2net_cloth_seg session (768x768, divide by the image "
               "maximum, ImageNet mean/std); the training repository's own infer.py feeds the "
               "full-resolution image with mean 0.5 / std 0.5 instead.",
               "Prediction: argmax over the 4 channels (a class map 0..3); fine-tuning stays "
               "binary."),
    ),
    ZooEntry(
        name="briaai/RMBG-1.4",
        architecture="isnet",
        description="BRIA RMBG-1.4 background removal; IS-Net architecture (its briarmbg.py "
                    "defines the ISNetDIS modules and parameter names)",
        sources=(
            Source(HF + "briaai/RMBG-1.4/resolve/main/model.pth",
                   "sha256:893c16c340b1ddafc93e78457a4d94190da9b7179149f8574284c83caebf5e8c",
                   "model.pth", "Hugging Face Hub (briaai/RMBG-1.4)",
                   "Git LFS sha256 of model.pth (also in briaai/BRIA-RMBG-1.4 and copies; size "
                   "176718373)"),
        ),
        license="bria-rmbg-1.4: source-available, NON-COMMERCIAL use only; commercial use "
                "needs an agreement with BRIA AI",
        commercial_use=False,
        training_data="over 12,000 licensed, manually labelled images (per the model card)",
        paper=DIS_PAPER + " (architecture)",
        size_mb=176.7,
        notes=("The Hub repository may require accepting the license (logged-in download); "
               "otherwise place model.pth as shown by 'salseg-models path briaai/RMBG-1.4'.",),
    ),
)

ENTRIES += (
    ZooEntry(
        name="birefnet",
        architecture="birefnet",
        description="BiRefNet (Swin-L) for general use (background removal)",
        sources=(_birefnet_hub("ZhengPeng7/BiRefNet"),),
        license=BIREFNET_LICENSE,
        training_data="DIS5K-TR, HRSOD, UHRSD, P3M-10k, TR-humans, AM-2k, ... (general-use "
                      "training set of the official README)",
        paper=BIREFNET_PAPER,
        notes=(BIREFNET_NOTE,),
    ),
    ZooEntry(
        name="birefnet_lite",
        architecture="birefnet_lite",
        description="BiRefNet_lite (Swin-T) for general use",
        sources=(_birefnet_hub("ZhengPeng7/BiRefNet_lite"),),
        license=BIREFNET_LICENSE,
        training_data="general-use training set of the official README",
        paper=BIREFNET_PAPER,
        notes=(BIREFNET_NOTE,),
    ),
    ZooEntry(
        name="birefnet-dis",
        architecture="birefnet",
        description="BiRefNet (Swin-L) trained on DIS5K only: the paper's DIS model",
        sources=(_birefnet_hub("ZhengPeng7/BiRefNet-DIS5K"),),
        license=BIREFNET_LICENSE,
        training_data="DIS5K DIS-TR (3000 images)",
        paper=BIREFNET_PAPER,
        published=("birefnet_paper/BiRefNet",),
        notes=(BIREFNET_NOTE,),
    ),
    ZooEntry(
        name="birefnet-hr",
        architecture="birefnet",
        description="BiRefNet_HR (Swin-L) trained at 2048x2048 for high-resolution images",
        sources=(_birefnet_hub("ZhengPeng7/BiRefNet_HR"),),
        license=BIREFNET_LICENSE,
        training_data="general-use training set of the official README, at 2048x2048",
        paper=BIREFNET_PAPER,
        input_size=(2048, 2048),
        notes=(BIREFNET_NOTE,),
    ),
    ZooEntry(
        name="briaai/RMBG-2.0",
        architecture="birefnet",
        description="BRIA RMBG-2.0 background removal; BiRefNet architecture (Swin-L)",
        sources=(Source(HF + "briaai/RMBG-2.0/resolve/main/model.safetensors", None,
                        "model.safetensors", "Hugging Face Hub (briaai/RMBG-2.0, gated)",
                        BIREFNET_UNPINNED),),
        license="CC BY-NC 4.0: NON-COMMERCIAL use only; commercial use needs an agreement "
                "with BRIA AI",
        commercial_use=False,
        training_data="licensed images (per the model card)",
        paper=BIREFNET_PAPER + " (architecture)",
        notes=("Gated: accept the licence on https://huggingface.co/briaai/RMBG-2.0 while logged "
               "in, download model.safetensors and place it as shown by "
               "'salseg-models path briaai/RMBG-2.0'.", BIREFNET_NOTE),
    ),
)

_BY_NAME = {e.name: e for e in ENTRIES}
ALIASES = {"rmbg-1.4": "briaai/RMBG-1.4", "rmbg": "briaai/RMBG-1.4",
           "isnet_general_use": "isnet-general-use", "isnet_anime": "isnet-anime",
           "rmbg-2.0": "briaai/RMBG-2.0", "birefnet-lite": "birefnet_lite",
           "birefnet_dis": "birefnet-dis", "birefnet_hr": "birefnet-hr"}


def entries() -> tuple[ZooEntry, ...]:
    """All catalogue entries, in catalogue order."""
    return tuple(_BY_NAME.values())


def _key(name: str) -> str | None:
    if name in _BY_NAME:
        return name
    lowered = {k.lower(): k for k in _BY_NAME}
    low = name.lower()
    return lowered.get(low) or ALIASES.get(low)


def is_zoo_name(name: object) -> bool:
    """Whether ``name`` is a catalogue name (or alias)."""
    return isinstance(name, str) and _key(name) is not None


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (case-insensitive, aliases accepted), or a clear error."""
    key = _key(name)
    if key is None:
        raise KeyError(f"unknown model-zoo name {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[key]
