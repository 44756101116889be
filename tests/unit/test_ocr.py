"""The plate OCR on the served recogniser (PP-OCRv6 small) and real plate crops (fast-plate-ocr's tests).

The model comes from the test run's model store (imported from its package, checksummed);
the crops from fast-plate-ocr==1.1.0's sdist (see tests/assets.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.plate_reader.crops import crop_plate, split_rows
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.plate_text import SYMBOL_SEEN, normalise, rank_candidates
from services.plate_reader.read_fusion import agreed
from services.plate_reader.text_lines import TextLineFinder
from services.plate_reader.types import BoundingBox, Candidate, Detection, OcrResult, ReadRequest
from tests.assets import asset

CROPS = {"test_plate_1.png": "plate_ad799kb", "test_plate_2.png": "plate_krw301"}


@pytest.fixture(scope="module")
def ocr(plate_models: dict[str, Path]) -> PlateOCR:
    return PlateOCR(plate_models["plate-ocr"])


def crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(asset(CROPS[name])).convert("RGB"))


def test_reads_a_real_plate(ocr: PlateOCR) -> None:
    [result] = ocr.read([crop("test_plate_1.png")])  # "AD 799 KB"
    assert normalise(result.text) == "AD799KB"
    assert result.confidence > 0.8
    assert len(result.char_confidences) == len(result.alternatives) == len(result.text)
    assert all(alts[0].char == char for char, alts in zip(result.text, result.alternatives))


@pytest.mark.xfail(strict=True, reason="PP-OCRv4 and PP-OCRv6 read this whole crop's W as N (measured)")
def test_reads_a_light_on_dark_plate(ocr: PlateOCR) -> None:
    [result] = ocr.read([crop("test_plate_2.png")])  # "KRW 301"
    assert normalise(result.text) == "KRW301"


def test_one_batch_reads_like_single_crops(ocr: PlateOCR) -> None:
    plates = [crop("test_plate_1.png"), crop("test_plate_2.png")]
    batched = ocr.read(plates + plates[:1])
    single = [ocr.read([p])[0] for p in plates]
    assert [r.text for r in batched] == [r.text for r in single] + [single[0].text]
    assert all(isinstance(r, OcrResult) for r in batched)
    assert ocr.read([]) == []


def test_two_row_plate_is_split_and_read_top_row_first(ocr: PlateOCR) -> None:
    # A real two-row plate made from a real one: "AD" stacked over "799 KB".
    plate = crop("test_plate_1.png")
    text_band = plate[14:50]
    top, bottom = text_band[:, 2:50], text_band[:, 52:149]
    width = bottom.shape[1]
    top = np.pad(top, ((0, 0), (0, width - top.shape[1]), (0, 0)), constant_values=255)
    gap = np.full((6, width, 3), 255, dtype=np.uint8)
    two_row = np.concatenate([top, gap, bottom])
    assert len(split_rows(two_row)) == 2
    assert len(split_rows(plate)) == 1
    [result] = ocr.read([two_row])
    assert normalise(result.text) == "AD799KB"


def test_reads_plates_from_detector_boxes(ocr: PlateOCR) -> None:
    plate = crop("test_plate_1.png")
    photo = np.pad(plate, ((40, 40), (60, 60), (0, 0)), constant_values=90)

    box = BoundingBox(60, 40, 60 + plate.shape[1], 40 + plate.shape[0])
    [result] = ocr.read_plates([(photo, box)])
    assert normalise(result.text) == "AD799KB"
    assert crop_plate(photo, (60, 40, 70, 50), margin=0.5).shape[:2] == (20, 20)


class OneBoxDetector:
    """Stands in for the detector: the same box in every image."""

    def __init__(self, box: BoundingBox) -> None:
        self.box = box

    def detect(
        self, images: list[np.ndarray], *, min_score: float = 0.25, imgsz: int | None = None
    ) -> list[list[Detection]]:
        return [[Detection(self.box, 0.9)] for _ in images]


def test_the_pipeline_reads_its_crops_like_read_crops_with_the_rules_on_or_off(ocr: PlateOCR) -> None:
    plate = crop("test_plate_1.png")  # "AD 799 KB"
    photo = np.pad(plate, ((40, 40), (60, 60), (0, 0)), constant_values=90)
    box = BoundingBox(60, 40, 60 + plate.shape[1], 40 + plate.shape[0])
    recognizer = PlateRecognizer(OneBoxDetector(box), ocr, review_threshold=0.8)
    plate_crop = crop_plate(photo, (box.xmin, box.ymin, box.xmax, box.ymax))
    [text] = ocr.read([plate_crop])

    [[reading]] = recognizer.read([photo], regions=["eu-generic"])
    assert reading.plate == "AD799KB" and reading.box == box and reading.dscore == 0.9
    assert list(reading.candidates) == rank_candidates(text, regions=["eu-generic"])
    [crop_reading] = recognizer.read_crops([plate_crop], regions=["eu-generic"])
    assert crop_reading.candidates == reading.candidates and crop_reading.plate == reading.plate

    # Rules off: the OCR's own text, normalised, scored by its weakest plate character (not
    # the space between "AD799" and "KB"); regions unused.
    [[raw]] = recognizer.read([photo], regions=["eu-generic"], rules=False)
    weakest = min(c for char, c in zip(text.text, text.char_confidences) if char != " ")
    assert raw.candidates == (Candidate("AD799KB", text.confidence, None, weakest),)
    assert raw.plate == "AD799KB" and raw.score == round(weakest, 4)
    assert recognizer.read_crops([plate_crop], rules=False)[0].candidates == raw.candidates
    assert recognizer.read_batch([ReadRequest(photo, 0.25)], rules=False) == [[raw]]
    assert recognizer.read_crops([]) == [] and recognizer.read_batch([]) == []


def test_a_plate_with_no_readable_text_is_still_reported(ocr: PlateOCR) -> None:
    blank = np.full((120, 300, 3), 200, dtype=np.uint8)
    recognizer = PlateRecognizer(OneBoxDetector(BoundingBox(50, 40, 250, 80)), ocr, review_threshold=0.8)
    for rules in (True, False):
        [[reading]] = recognizer.read([blank], rules=rules)
        assert (reading.plate, reading.score, reading.candidates, reading.review) == ("", 0.0, (), True)


def test_a_symbol_no_plate_carries_is_reported_and_flags_the_reading(ocr: PlateOCR) -> None:
    # A shop sign that reads like a German plate ("SALE50") but for its "%".
    font = ImageFont.load_default(size=60)  # Pillow's own scalable font: no system font needed
    sign = Image.new("RGB", (420, 100), "white")
    ImageDraw.Draw(sign).text((20, 18), "SALE 50%", fill="black", font=font)
    [read] = ocr.read([np.asarray(sign)])
    assert normalise(read.text) == "SALE50" and read.foreign >= 0.95, read
    recognizer = PlateRecognizer(None, ocr, review_threshold=0.5)
    [reading] = recognizer.read_crops([np.asarray(sign)])
    assert reading.plate == "SALE50" and reading.review and reading.score <= 1 - read.foreign
    # The same word without the "%" is read as surely and not flagged for a foreign symbol.
    plain = Image.new("RGB", (420, 100), "white")
    ImageDraw.Draw(plain).text((20, 18), "SALE 50", fill="black", font=font)
    [read] = ocr.read([np.asarray(plain)])
    assert read.foreign < 0.95


def drawn_plate(left: str, right: str) -> np.ndarray:
    """A plate printed around a red and white checkerboard (Croatia's coat of arms), drawn here."""
    font = ImageFont.load_default(size=60)
    plate = Image.new("RGB", (460, 100), "white")
    draw = ImageDraw.Draw(plate)
    draw.text((20, 18), left, fill="black", font=font)
    x, cell = 32 + draw.textlength(left, font=font), 12
    for i in range(25):
        cx, cy = x + cell * (i % 5), 20 + cell * (i // 5)
        red = (i % 5 + i // 5) % 2 == 0
        draw.rectangle((cx, cy, cx + cell, cy + cell), fill=(200, 20, 30) if red else "white")
    draw.text((x + 6 * cell + 12, 18), right, fill="black", font=font)
    return np.asarray(plate)


def test_a_coat_of_arms_inside_the_number_is_seen_where_it_sits(ocr: PlateOCR) -> None:
    croatian = drawn_plate("ST", "718-VZ")
    [read] = ocr.read([croatian])
    assert normalise(read.text) == "ST718VZ"
    assert read.symbol_gaps[2] >= SYMBOL_SEEN, read  # between the T and the 7
    recognizer = PlateRecognizer(None, ocr, review_threshold=0.93)
    [reading] = recognizer.read_crops([croatian])
    assert (reading.plate, reading.candidates[0].region, reading.review) == ("ST718VZ", "hr", False)
    # A two-row Slovak plate's top row alone (its letter row lost, as text_lines cut it once):
    # BB671 fits Germany's layout, which has no arms after BB, so it is flagged.
    [reading] = recognizer.read_crops([drawn_plate("BB", "671")])
    assert reading.plate == "BB671" and reading.review, reading
    # Slovak, read BA3020Z: that fits Croatia's AA|9999A, but no Croatian plate begins with BA
    # (plate_formats.yaml's prefixes), so it is Slovakia's AA|999AA: the letter O. (It was
    # accepted as Croatian BA3020Z at 0.93: the real photos had it twice.)
    [reading] = recognizer.read_crops([drawn_plate("BA", "302OZ")])
    assert (reading.plate, reading.candidates[0].region) == ("BA302OZ", "sk"), reading
    # The district code left of the arms lost (a camera test crop's BA294LS read 294LS, accepted
    # as eu-generic's digits-first plate): the arms before the number flag it.
    [reading] = recognizer.read_crops([drawn_plate("", "294LS")])
    assert reading.plate == "294LS" and reading.review, reading


@pytest.mark.parametrize(
    ("left", "right", "read_as", "plate"),
    [
        ("VŽ", "123-AB", "V123AB", "VZ123AB"),
        ("ČK", "345-DE", "K345DE", "CK345DE"),
        ("PŽ", "987-BC", "P987BC", "PZ987BC"),
        ("ŽU", "456-GH", "U456GH", "ZU456GH"),
    ],
)
def test_a_croatian_code_letter_the_model_cannot_read_is_put_back_and_flagged(
    ocr: PlateOCR, left: str, right: str, read_as: str, plate: str
) -> None:
    # The recogniser's dictionary has no Č, Š or Ž: it drops them (VŽ 123-AB reads V123-AB,
    # the Ž and the arms seen as one symbol). plate_formats.yaml's Croatian prefixes, written
    # with their Ž, put the letter back where a code needs it; it was not read, so a person checks it.
    image = drawn_plate(left, right)
    [read] = ocr.read([image])
    assert normalise(read.text) == read_as
    [reading] = PlateRecognizer(None, ocr, review_threshold=0.93).read_crops([image])
    assert (reading.plate, reading.candidates[0].region, reading.review) == (plate, "hr", True), reading


def test_a_temperature_changes_how_sure_a_reading_is_never_what_it_reads(
    plate_models: dict[str, Path],
) -> None:
    plain = PlateOCR(plate_models["plate-ocr"]).read([crop("test_plate_2.png")])[0]
    softer = PlateOCR(plate_models["plate-ocr"], temperature=2.0).read([crop("test_plate_2.png")])[0]
    sharper = PlateOCR(plate_models["plate-ocr"], temperature=0.5).read([crop("test_plate_2.png")])[0]
    assert softer.text == plain.text == sharper.text
    assert all(
        s < p < h
        for s, p, h in zip(softer.char_confidences, plain.char_confidences, sharper.char_confidences)
        if p < 0.999
    )
    assert min(softer.char_confidences) < min(plain.char_confidences) < min(sharper.char_confidences)


def test_folding_the_alphabet_sums_every_class_like_the_whole_matrix(ocr: PlateOCR) -> None:
    # Each frame's 6,625 class probabilities become (blank, plate alphabet, foreign) columns from
    # the 129 classes that map to the alphabet, the foreign column being the rest of the frame:
    # it must equal the dense 0/1 fold over every class, foreign symbols (%, Chinese) included.
    from services.plate_reader.ocr import _fold_matrix

    dense = _fold_matrix(ocr._session.get_modelmeta().custom_metadata_map["character"])
    logits = np.random.default_rng(0).normal(0, 4, (40, dense.shape[0])).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ocr._heads[0].fold(probabilities), probabilities @ dense, atol=1e-6)


def test_a_second_recogniser_reading_alike_raises_the_score_never_the_plate(
    ocr: PlateOCR, plate_models: dict[str, Path]
) -> None:
    # The same model file as the "tuned" one: both read alike, so the plate is agreed on.
    finder = TextLineFinder(plate_models["plate-text-detector"])
    box = BoundingBox(0, 0, 1, 1)
    alone = PlateRecognizer(OneBoxDetector(box), ocr, review_threshold=0.93, text_lines=finder)
    twin = PlateOCR(plate_models["plate-ocr"])
    fused = PlateRecognizer(
        OneBoxDetector(box), ocr, review_threshold=0.93, text_lines=finder, tuned_ocr=twin
    )
    [one] = alone.read_crops([crop("test_plate_1.png")], regions=["eu-generic"])
    [two] = fused.read_crops([crop("test_plate_1.png")], regions=["eu-generic"])
    sure = one.candidates[0].confidence
    assert two.plate == one.plate == "AD799KB"
    assert abs(two.candidates[0].confidence - agreed(sure, sure)) < 1e-6 and two.score >= one.score


def test_the_shipped_tuned_tail_reads_in_the_same_call_and_leaves_the_base_reading_as_it_was(
    ocr: PlateOCR, plate_models: dict[str, Path]
) -> None:
    # models/plate-tuned-tail.onnx grafted on PP-OCRv6 small (tuned_tail.py): one more output.
    twin = PlateOCR(plate_models["plate-ocr"], tail_path=plate_models["plate-ocr-tail"])
    lines = [split_rows(crop(name)) for name in CROPS]
    alone = ocr.read_lines(lines)
    base, tuned = twin.read_both(lines)
    assert twin.has_tail and not ocr.has_tail and ocr.read_both(lines)[1] is None
    assert [r.text for r in base] == [r.text for r in alone]
    np.testing.assert_allclose(
        [c for r in base for c in r.char_confidences],
        [c for r in alone for c in r.char_confidences],
        atol=1e-5,
    )
    assert tuned is not None and normalise(tuned[0].text) == "AD799KB" and tuned[0].confidence > 0.9
    assert twin.read_lines(lines)[0].text == alone[0].text  # the base's output alone, when asked


def test_a_tail_trained_on_another_recogniser_is_refused_and_the_reader_reads_alone(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from services.plate_reader.tuned_tail import BASE_SHA256, TailMismatch

    tail = onnx.load(str(plate_models["plate-ocr-tail"]))
    for prop in tail.metadata_props:
        if prop.key == BASE_SHA256:
            prop.value = "0" * 64
    onnx.save(tail, str(tmp_path / "tail.onnx"))
    with pytest.raises(TailMismatch, match="MODELPORT_PLATE_OCR_MODEL"):
        PlateOCR(plate_models["plate-ocr"], tail_path=tmp_path / "tail.onnx")

    def reader(folder: Path) -> PlateRecognizer:
        return PlateRecognizer.from_files(
            plate_models["plate-detector"],
            plate_models["plate-ocr"],
            review_threshold=0.93,
            tuned_ocr_dir=folder,
        )

    recognizer = reader(tmp_path)
    assert not recognizer.ocr.has_tail and recognizer.tuned_ocr is None
    # A stored version holding its whole model too is then read as a second model, as before tails
    shutil.copyfile(plate_models["plate-ocr"], tmp_path / "model.onnx")
    recognizer = reader(tmp_path)
    assert not recognizer.ocr.has_tail and recognizer.tuned_ocr is not None
    # ... and a tail that fits is grafted, the whole model left unread
    shutil.copyfile(plate_models["plate-ocr-tail"], tmp_path / "tail.onnx")
    recognizer = reader(tmp_path)
    assert recognizer.ocr.has_tail and recognizer.tuned_ocr is None


def test_the_tails_temperature_changes_its_reading_alone(plate_models: dict[str, Path]) -> None:
    lines = [split_rows(crop("test_plate_1.png"))]
    plain = PlateOCR(plate_models["plate-ocr"], tail_path=plate_models["plate-ocr-tail"]).read_both(lines)
    softer = PlateOCR(
        plate_models["plate-ocr"], tail_path=plate_models["plate-ocr-tail"], tail_temperature=2.0
    ).read_both(lines)
    assert plain[0] == softer[0]  # the base's reading, as it was
    assert plain[1] is not None and softer[1] is not None and plain[1][0].text == softer[1][0].text
    assert softer[1][0].confidence < plain[1][0].confidence


def test_a_store_without_the_shipped_tail_reads_alone_and_a_missing_tag_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A store imported before the tail shipped (`resolve` faked to find nothing): the service
    # starts with the base alone and says how to add it; a tag someone asked for must exist.
    from services.core import model_store
    from services.plate_reader.settings import Settings

    def missing(tag: str) -> None:
        raise model_store.ModelNotFound(tag)

    monkeypatch.setattr(model_store, "resolve", missing)
    assert Settings(ocr_model="plate-ocr:x").tuned_ocr_model() is None
    assert "modelport models import plate-ocr-tail" in caplog.text
    with pytest.raises(model_store.ModelNotFound):
        Settings(ocr_model="plate-ocr:x", ocr_tuned_model="my-tail").tuned_ocr_model()
    assert Settings(ocr_tuned_model="my-tail:v1").tuned_ocr_model() == "my-tail:v1"
    assert Settings(ocr_tuned_model="none").tuned_ocr_model() is None
