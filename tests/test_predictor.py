"""The LiteMedSAM predictor on a small random model: batching, prompts, validation, label maps, 3D propagation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.errors import InputError
from medfoundry.inference.encoder_backends import TorchEncoder
from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts
from medfoundry.inference.prompts import ObjectPrompt, load_prompt_file
from medfoundry.inference.propagation import SliceEmbeddings
from medfoundry.inference.segment import segment_array
from medfoundry.preprocessing.boxes import mask_box


class CountingEncoder(TorchEncoder):
    def __init__(self, encoder):
        super().__init__(encoder)
        self.images = 0

    def __call__(self, batch):
        self.images += len(batch)
        return super().__call__(batch)


@pytest.fixture()
def predictor(tiny_model):
    return LiteMedSAMPredictor(model=tiny_model, backend=CountingEncoder(tiny_model.image_encoder))


def test_many_boxes_decode_in_one_batch_like_one_by_one(predictor):
    rng = np.random.default_rng(0)
    image = rng.random((90, 120)).astype(np.float32)
    boxes = np.array([[5, 5, 40, 50], [60, 10, 110, 80], [20, 30, 70, 85]], np.float32)
    predictor.set_image(image)
    together = predictor.predict_logits(Prompts(boxes=boxes))
    singles = torch.cat([predictor.predict_logits(Prompts(boxes=b[None])) for b in boxes])
    torch.testing.assert_close(together, singles, atol=1e-4, rtol=1e-4)
    masks = predictor.predict(boxes=boxes)
    assert masks.shape == (3, 90, 120) and masks.dtype == bool
    assert predictor.encoder.images == 1  # the image was embedded once for all prompts


def test_points_with_negative_labels_change_the_prompt(predictor):
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    predictor.set_image(image)
    pos = predictor.predict_logits(Prompts(points=[[[30, 30], [10, 10]]], point_labels=[[1, 1]]))
    neg = predictor.predict_logits(Prompts(points=[[[30, 30], [10, 10]]], point_labels=[[1, 0]]))
    assert pos.shape == (1, 1, 256, 256)
    assert not torch.allclose(pos, neg)


@pytest.mark.parametrize(
    ("box", "message"),
    [([50, 10, 20, 40], "x1 < x0"), ([10, 50, 40, 20], "x1 < x0 or y1 < y0"), ([200, 10, 260, 40], "outside")],
)
def test_bad_boxes_are_refused(predictor, box, message):
    predictor.set_image(np.zeros((64, 100), np.float32))
    with pytest.raises(InputError, match=message):
        predictor.predict(boxes=[box])


def test_point_outside_and_missing_prompts_are_refused(predictor):
    predictor.set_image(np.zeros((64, 100), np.float32))
    with pytest.raises(InputError, match="outside"):
        predictor.predict(points=[[[120, 10]]])
    with pytest.raises(InputError, match="at least one box or point"):
        Prompts()


def test_colour_image_and_label_map_on_input_grid(predictor):
    image = np.random.default_rng(2).random((70, 50, 3)).astype(np.float32)
    objects = [ObjectPrompt(box=[5, 5, 30, 40]), ObjectPrompt(points=[[20, 50]], point_labels=[1])]
    labels = segment_array(predictor, image, objects, is_3d=False)
    assert labels.shape == (70, 50) and labels.dtype == np.uint8
    # the same as prompting each object alone on the colour image, later objects drawn over earlier ones
    predictor.set_image(image)
    box_mask = predictor.predict(boxes=[[5, 5, 30, 40]])[0]
    point_mask = predictor.predict(points=[[[20, 50]]], point_labels=[[1]])[0]
    np.testing.assert_array_equal(labels, np.where(point_mask, 2, np.where(box_mask, 1, 0)))


def test_3d_box_needs_six_numbers(predictor):
    with pytest.raises(InputError, match=r"\[x0, y0, z0, x1, y1, z1\]"):
        segment_array(predictor, np.zeros((5, 32, 32), np.float32), [ObjectPrompt(box=[1, 1, 9, 9])], is_3d=True)
    with pytest.raises(InputError, match="outside slices"):
        segment_array(predictor, np.zeros((5, 32, 32), np.float32), [ObjectPrompt(box=[1, 1, 7, 9, 9, 9])], is_3d=True)


class OraclePredictor:
    """A stand-in for the model that returns the true object inside the prompt box: tests the propagation logic."""

    def __init__(self, truth: np.ndarray):
        self.truth = truth
        self.embedded: list[int] = []
        self.boxes: list[np.ndarray] = []

    def embed(self, images):
        z = int(images[0].flat[0])  # the test volumes hold their slice index as intensity
        self.embedded.append(z)
        return torch.tensor([z])

    def set_image(self, image, embedding=None):
        self.z = int(embedding[0])

    def predict(self, prompts, threshold=0.5):
        out = np.zeros((len(prompts),) + self.truth.shape[1:], bool)
        for i, box in enumerate(prompts.boxes if prompts.boxes is not None else [None] * len(prompts)):
            if box is None:
                out[i] = self.truth[self.z] > 0
                continue
            self.boxes.append(box)
            x0, y0 = np.floor(box[:2]).astype(int)  # every pixel the box touches
            x1, y1 = np.ceil(box[2:]).astype(int)
            out[i, y0 : y1 + 1, x0 : x1 + 1] = self.truth[self.z, y0 : y1 + 1, x0 : x1 + 1] > 0
        return out


def slice_index_volume(shape):
    return np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()


def _ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius**2


def test_propagation_follows_the_object_and_stops_where_it_vanishes():
    truth = _ball((30, 40, 40), (15, 20, 20), 6).astype(np.uint8)
    oracle = OraclePredictor(truth)
    volume = slice_index_volume(truth.shape)
    # a box around the middle slice's object, over the whole volume in z
    labels = segment_array(oracle, volume, [ObjectPrompt(box=[14, 14, 0, 26, 26, 29])], is_3d=True)
    np.testing.assert_array_equal(labels > 0, truth > 0)
    # slices 9..21 hold the ball; propagation visits them plus the first empty slice at each end, never beyond
    assert sorted(set(oracle.embedded)) == list(range(8, 23))
    assert len(oracle.embedded) == len(set(oracle.embedded))  # each slice embedded once


def test_propagation_respects_the_box_z_range_and_per_slice_boxes():
    truth = _ball((30, 40, 40), (15, 20, 20), 6).astype(np.uint8)
    oracle = OraclePredictor(truth)
    volume = slice_index_volume(truth.shape)
    labels = segment_array(oracle, volume, [ObjectPrompt(box=[14, 14, 13, 26, 26, 17])], is_3d=True)
    assert np.nonzero(labels)[0].min() == 13 and np.nonzero(labels)[0].max() == 17
    oracle.embedded.clear()
    labels = segment_array(
        oracle, volume, [ObjectPrompt(slice_boxes={12: [10, 10, 30, 30], 18: [10, 10, 30, 30]})], is_3d=True
    )
    assert sorted(np.unique(np.nonzero(labels)[0])) == [12, 18] and sorted(oracle.embedded) == [12, 18]


def test_slice_step_encodes_every_kth_slice_interpolates_between_and_finds_the_ends():
    truth = _ball((30, 40, 40), (15, 20, 20), 6).astype(np.uint8)
    dense = OraclePredictor(truth)
    volume = slice_index_volume(truth.shape)
    box = ObjectPrompt(box=[14, 14, 0, 26, 26, 29])
    reference = segment_array(dense, volume, [box], is_3d=True) > 0
    oracle = OraclePredictor(truth)
    labels = segment_array(oracle, volume, [box], is_3d=True, slice_step=3) > 0
    # middle slice 14, then 17, 20, 23 (empty: 21, 22 walked one by one) and 11, 8 (empty: 10, 9 walked)
    assert sorted(oracle.embedded) == [8, 9, 10, 11, 14, 17, 20, 21, 22, 23]
    assert len(oracle.embedded) < len(dense.embedded)
    assert np.nonzero(labels)[0].min() == 9 and np.nonzero(labels)[0].max() == 21  # the ball's ends, exactly
    for z in (11, 14, 17, 20, 21, 9, 10):  # segmented slices are the oracle's own
        np.testing.assert_array_equal(labels[z], reference[z])
    for z in (12, 13, 15, 16, 18, 19):  # interpolated: close to the truth, between its neighbours in area
        inter = (labels[z] & reference[z]).sum() / (labels[z] | reference[z]).sum()
        assert inter > 0.7, z
    with pytest.raises(InputError, match="slice step"):
        segment_array(oracle, volume, [box], is_3d=True, slice_step=0)


def test_interpolated_masks_move_from_one_shape_to_the_other():
    from medfoundry.inference.propagation import interpolate_masks

    small, large = _ball((1, 41, 41), (0, 20, 20), 5)[0], _ball((1, 41, 41), (0, 20, 20), 15)[0]
    between = interpolate_masks(small, large, 3)
    areas = [int(m.sum()) for m in [small, *between, large]]
    assert len(between) == 3 and areas == sorted(areas) and len(set(areas)) == 5
    assert all((small <= m).all() and (m <= large).all() for m in between)  # nested discs stay nested
    assert all(np.array_equal(m, small) for m in interpolate_masks(small, small, 2))


def test_points_in_3d_propagate_without_z_limit():
    truth = _ball((30, 40, 40), (15, 20, 20), 6).astype(np.uint8)
    oracle = OraclePredictor(truth)
    volume = slice_index_volume(truth.shape)
    labels = segment_array(oracle, volume, [ObjectPrompt(points=[[20, 20, 15]])], is_3d=True)
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_more_than_255_objects_get_a_wider_label_type():
    truth = np.ones((1, 20, 300), np.uint8)
    oracle = OraclePredictor(truth)
    volume = slice_index_volume((1, 20, 300))
    objects = [ObjectPrompt(slice_boxes={0: [x, 2, x, 10]}) for x in range(280)]
    labels = segment_array(oracle, volume, objects, is_3d=True)
    assert labels.dtype == np.uint16 and labels.max() == 280 and len(np.unique(labels)) == 281


def test_slice_embeddings_are_cached_and_bounded(predictor):
    volume = np.random.default_rng(3).random((4, 32, 32)).astype(np.float32)
    cache = SliceEmbeddings(predictor, volume, max_slices=2)
    first = cache[0]
    assert cache[0] is first and cache.computed == 1
    cache[1], cache[2]
    assert cache.computed == 3
    cache[0]  # evicted (least recently used) and recomputed
    assert cache.computed == 4


def test_mask_box_margin_and_clipping():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 2:8] = True
    np.testing.assert_allclose(mask_box(mask, 3), [0, 2, 10, 12])
    assert mask_box(np.zeros((4, 4), bool), 3) is None


def test_prompt_files(tmp_path):
    (tmp_path / "b.csv").write_text("x0,y0,x1,y1\n1,2,30,40\n5 6 7 8\n")
    objs = load_prompt_file(tmp_path / "b.csv")
    assert [o.box.tolist() for o in objs] == [[1, 2, 30, 40], [5, 6, 7, 8]]
    (tmp_path / "o.json").write_text(
        '[[1,2,3,4,5,6], {"points": [[3,4,5]], "negative": [[6,7,5]]}, {"slice_boxes": {"2": [1,1,9,9]}}]'
    )
    objs = load_prompt_file(tmp_path / "o.json")
    assert objs[0].box.size == 6 and objs[1].point_labels.tolist() == [1, 0] and 2 in objs[2].slice_boxes
    (tmp_path / "bad.json").write_text("[[1,2,3]]")
    with pytest.raises(InputError, match="4 \\(2D\\) or 6 \\(3D\\)"):
        load_prompt_file(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        load_prompt_file(tmp_path / "missing.json")
