"""A Keras ViT built from ``keras.layers``: token layers (N, T, C) explained like the CAM papers say.

Reduced for time: 32 px images, 8 px patches (a 4x4 grid plus a class token: 17 tokens), width 16,
two blocks (the first with attention written by hand from Dense / Reshape / ``keras.ops.einsum``, so
per-head tensors are graph nodes; the second with ``MultiHeadAttention``), random seeded weights.
References are computed here by hand: gradients with ``tf.GradientTape`` on the token tensor,
Ablation-CAM's tail by calling the model's own layers on ablated tokens, Score-CAM's masked inputs
scored by the Keras model, Eigen-CAM's SVD in NumPy, and the shared post-processing (ReLU, min-max,
bilinear resize with half-pixel centres, min-max) with ``tf.image.resize``.
"""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from keras import layers, ops  # noqa: E402

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import LayoutError, OptionError  # noqa: E402

SIZE, PATCH, DIM, HEADS, CLASSES = 32, 8, 16, 2, 5
GRID = SIZE // PATCH
LAYER = "block1_ln1"
TARGETS = [1, 3]


class ClassToken(layers.Layer):
    def build(self, shape):
        self.cls = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="cls")

    def call(self, x):
        c = ops.broadcast_to(ops.cast(self.cls, x.dtype), (ops.shape(x)[0], 1, x.shape[-1]))
        return ops.concatenate([c, x], axis=1)


class PositionEmbedding(layers.Layer):
    def build(self, shape):
        self.pos = self.add_weight(shape=(1, shape[1], shape[2]), initializer="random_normal", name="pos")

    def call(self, x):
        return x + ops.cast(self.pos, x.dtype)


def attention_by_hand(y, name):
    """Multi-head self-attention from layers and keras.ops: q, k, v (N, T, heads, d), scores (N, heads, T, T)."""
    t, d = y.shape[1], DIM // HEADS
    q, k, v = (layers.Reshape((t, HEADS, d), name=f"{name}_{s}_heads")(layers.Dense(DIM, name=f"{name}_{s}")(y))
               for s in "qkv")
    p = ops.softmax(ops.einsum("bqhd,bkhd->bhqk", q, k) * (d ** -0.5), axis=-1)
    o = layers.Reshape((t, DIM), name=f"{name}_merge")(ops.einsum("bhqk,bkhd->bqhd", p, v))
    return layers.Dense(DIM, name=f"{name}_proj")(o)


def mini_vit(dense_patches: bool = False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    if dense_patches:  # patches cut with Reshape / Permute, embedded by a Dense layer
        x = layers.Reshape((GRID, PATCH, GRID, PATCH, 3))(inp)
        x = layers.Permute((1, 3, 2, 4, 5))(x)
        x = layers.Dense(DIM, name="patch_dense")(layers.Reshape((GRID * GRID, PATCH * PATCH * 3))(x))
    else:
        x = layers.Conv2D(DIM, PATCH, strides=PATCH, name="patch_conv")(inp)
        x = layers.Reshape((GRID * GRID, DIM), name="patch_tokens")(x)
    x = PositionEmbedding(name="pos")(ClassToken(name="cls")(x))
    for i in range(2):
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln1")(x)
        y = attention_by_hand(y, f"block{i}_attn") if i == 0 else layers.MultiHeadAttention(
            HEADS, DIM // HEADS, name=f"block{i}_mha")(y, y)
        x = layers.Add(name=f"block{i}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln2")(x)
        y = layers.Dense(DIM, name=f"block{i}_fc2")(layers.Dense(2 * DIM, activation="gelu", name=f"block{i}_fc1")(y))
        x = layers.Add(name=f"block{i}_add2")([x, y])
    x = layers.GlobalAveragePooling1D(name="pool")(layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x))
    return keras.Model(inp, layers.Dense(CLASSES, name="head")(x), name="mini_vit")


@pytest.fixture(scope="module")
def vit():
    return mini_vit()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


def grid(tokens):
    """(N, 1 + h*w, C) -> (N, C, h, w): the class token dropped, the patch grid restored."""
    t = np.asarray(tokens, np.float64)
    return t[:, 1:].reshape(len(t), GRID, GRID, -1).transpose(0, 3, 1, 2)


def heatmap(cam):
    """ReLU, min-max (eps 1e-7), bilinear resize (half-pixel centres, TensorFlow's), ReLU, min-max."""
    def mm(m):
        m = m - m.min(axis=(1, 2), keepdims=True)
        return m / (m.max(axis=(1, 2), keepdims=True) + 1e-7)

    m = mm(np.maximum(cam, 0))
    up = tf.image.resize(m[..., None].astype(np.float32), (SIZE, SIZE), method="bilinear").numpy()[..., 0]
    return mm(np.maximum(up, 0))


def tape_reference(model, x, layer=LAYER):
    """(A, G) (N, C, h, w), token tensor, skip input of the block, scores: d(score)/d(tokens) by GradientTape."""
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("block0_add2").output,
                                       model.outputs[0]])
    with tf.GradientTape() as tape:
        tokens, skip, out = probe(tf.constant(x))
        scores = tf.gather(out, TARGETS, axis=1, batch_dims=1)
    g = tape.gradient(scores, tokens)
    return grid(tokens), grid(g), tokens.numpy(), skip.numpy(), scores.numpy().astype(np.float64)


def tail(model, skip, tokens):
    """The model after block1_ln1, called layer by layer on (ablated) tokens."""
    get = model.get_layer
    y = get("block1_mha")(tokens, tokens)
    h = get("block1_add1")([skip, y])
    h = get("block1_add2")([h, get("block1_fc2")(get("block1_fc1")(get("block1_ln2")(h)))])
    return get("head")(get("pool")(get("final_ln")(h))).numpy()


def check(ex, x, method, raw_ref, atol=1e-4):
    e = ex.explain(x, method, target=TARGETS)
    scale = np.abs(raw_ref).max()
    assert np.abs(e.raw - raw_ref).max() <= 1e-4 * scale, (method, np.abs(e.raw - raw_ref).max(), scale)
    assert np.abs(e.heatmap - heatmap(raw_ref)).max() <= atol, (method, np.abs(e.heatmap - heatmap(raw_ref)).max())
    return e


def test_layout_detected_and_listing(vit):
    ex = Explainer.from_keras(vit, LAYER, progress=False)
    assert str(ex.adapter.layer_layout) == f"tokens(prefix=1, grid={GRID}x{GRID})"
    listed = {c.name: c.layout for c in ex.layers()}
    assert listed["patch_conv"] == "NHWC" and listed["patch_tokens"] == f"tokens(prefix=0, grid={GRID}x{GRID})"
    for name in ("block0_ln1", "block0_attn_proj", "block0_add1", "block1_mha", "block1_add2", "final_ln"):
        assert listed[name] == f"tokens(prefix=1, grid={GRID}x{GRID})", name
    # per-head tensors (N, T, heads, d), attention scores (N, heads, T, T) and the merged heads (no
    # layer says which axis holds channels) are never offered
    assert not [n for n in listed if n.endswith("_heads") or "einsum" in n.lower() or "softmax" in n.lower()
                or n.endswith("_merge")], listed
    dense = Explainer.from_keras(mini_vit(dense_patches=True), LAYER, progress=False)
    assert str(dense.adapter.layer_layout) == f"tokens(prefix=1, grid={GRID}x{GRID})"
    assert {c.name: c.layout for c in dense.layers()}["patch_dense"] == f"tokens(prefix=0, grid={GRID}x{GRID})"


def test_gradient_cams_match_gradient_tape(vit, x):
    ex = Explainer.from_keras(vit, LAYER, progress=False)
    a, g, *_ = tape_reference(vit, x)
    w = g.mean(axis=(2, 3))
    check(ex, x, "gradcam", np.einsum("nc,nchw->nhw", w, a))
    g2 = g ** 2
    alpha = np.where(g != 0, g2 / (2 * g2 + a.sum(axis=(2, 3), keepdims=True) * g ** 3 + 1e-6), 0)
    check(ex, x, "gradcam++", np.einsum("nc,nchw->nhw", (alpha * np.maximum(g, 0)).sum(axis=(2, 3)), a))
    check(ex, x, "xgradcam", np.einsum("nc,nchw->nhw", (g * a / (a.sum(axis=(2, 3), keepdims=True) + 1e-7)).sum(axis=(2, 3)), a))
    check(ex, x, "hirescam", (g * a).sum(axis=1))
    check(ex, x, "layercam", (np.maximum(g, 0) * a).sum(axis=1))


def test_forward_cams_match_hand_references(vit, x):
    ex = Explainer.from_keras(vit, LAYER, progress=False)
    engine = ex.adapter.engine(x.shape[1:])
    assert engine.run(x, ["layer_output"])[0].shape == (2, 1 + GRID * GRID, DIM)  # the token tensor is in the graph
    a, _, tokens, skip, y = tape_reference(vit, x)

    # Ablation-CAM: channel c zeroed on every token (class token included), the rest of the model rerun
    y_c = np.empty((2, DIM))
    for c in range(DIM):
        ablated = tokens.copy()
        ablated[:, :, c] = 0
        y_c[:, c] = tail(vit, skip, ablated)[np.arange(2), TARGETS]
    check(ex, x, "ablationcam", np.einsum("nc,nchw->nhw", (y[:, None] - y_c) / y[:, None], a))

    # Score-CAM: each channel upsampled (align_corners=True), min-max (eps 1e-8), times the image
    up = tf.compat.v1.image.resize(a.reshape(-1, GRID, GRID, 1).astype(np.float32), (SIZE, SIZE),
                                   method="bilinear", align_corners=True).numpy().reshape(2, DIM, SIZE, SIZE)
    lo, hi = up.min(axis=(2, 3), keepdims=True), up.max(axis=(2, 3), keepdims=True)
    masks = (up - lo) / (hi - lo + 1e-8)
    s = np.stack([np.asarray(vit(x[i][None] * masks[i][..., None]))[:, TARGETS[i]] for i in range(2)])
    w = np.exp(s - s.max(axis=1, keepdims=True))
    check(ex, x, "scorecam", np.einsum("nc,nchw->nhw", w / w.sum(axis=1, keepdims=True), a))

    # Eigen-CAM: positions x channels, centred, on the first right singular vector. Its sign is
    # arbitrary, and the library's rule (correlate with the channel mean) is moot after a LayerNorm,
    # whose channel mean is ~0 at every position: compared up to sign, per image
    raw = ex.explain(x, "eigencam").raw
    ref = []
    for ai, r in zip(a, raw):
        m = ai.reshape(DIM, -1).T
        m = m - m.mean(axis=0)
        p = (m @ np.linalg.svd(m, full_matrices=False)[2][0]).reshape(GRID, GRID)
        ref.append(p if (p * r).sum() >= 0 else -p)
    check(ex, x, "eigencam", np.stack(ref))


def test_reshape_function_equals_layer_layout(vit, x):
    def reshape(t):  # pytorch-grad-cam's reshape_transform, written with TensorFlow ops
        return tf.transpose(tf.reshape(t[:, 1:, :], (-1, GRID, GRID, t.shape[-1])), (0, 3, 1, 2))

    by_layout = Explainer.from_keras(vit, LAYER, progress=False, layer_layout="tokens")
    by_reshape = Explainer.from_keras(vit, LAYER, progress=False, reshape=reshape)
    for m in ("gradcam", "hirescam", "scorecam", "ablationcam", "eigencam"):
        np.testing.assert_allclose(by_reshape.explain(x, m, target=TARGETS).raw,
                                   by_layout.explain(x, m, target=TARGETS).raw, atol=1e-5, err_msg=m)
    with pytest.raises(OptionError, match="either layer_layout= or reshape="):
        Explainer.from_keras(vit, LAYER, layer_layout="tokens", reshape=reshape)
    with pytest.raises(ValueError, match=r"reshape= must return a \(N, C, h, w\)"):
        Explainer.from_keras(vit, LAYER, reshape=lambda t: t[:, 1:])


def test_ambiguous_token_layer_raises_instead_of_guessing(vit, x):
    # `pos` is a custom layer: nothing says whether its (N, 17, 16) output is (N, T, C) or (N, C, T),
    # and at 32 px both 17 = 1 + 4x4 tokens and 16 = a 4x4 grid of channels fit
    with pytest.raises(LayoutError, match=r"layer 'pos' outputs shape \(None, 17, 16\).*layer_layout="):
        Explainer.from_keras(vit, "pos")
    ex = Explainer.from_keras(vit, "pos", layer_layout="tokens", progress=False)
    assert str(ex.adapter.layer_layout) == f"tokens(prefix=1, grid={GRID}x{GRID})"
    a, g, *_ = tape_reference(vit, x, "pos")
    check(ex, x, "gradcam", np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a))
    with pytest.raises(LayoutError, match="rank-4"):  # a layout that contradicts the tensor is refused too
        Explainer.from_keras(vit, "pos", layer_layout="NHWC")


def test_dynamic_input_size_resolves_the_grid_per_size():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    t = layers.Reshape((-1, DIM))(layers.Conv2D(DIM, PATCH, strides=PATCH)(inp))
    y = layers.LayerNormalization(name="ln")(t)
    t = layers.Add()([t, layers.MultiHeadAttention(HEADS, DIM // HEADS)(y, y)])
    model = keras.Model(inp, layers.Dense(CLASSES)(layers.GlobalAveragePooling1D()(t)))
    ex = Explainer.from_keras(model, "ln", progress=False)
    for size in (32, 48, 32):  # the grid follows the images (one probe forward pass per new size)
        xs = np.random.default_rng(size).normal(size=(1, size, size, 3)).astype(np.float32)
        probe = keras.Model(model.inputs, [model.get_layer("ln").output, model.outputs[0]])
        with tf.GradientTape() as tape:
            tokens, out = probe(tf.constant(xs))
            score = out[:, 1]
        g = np.asarray(tape.gradient(score, tokens), np.float64)
        n = size // PATCH
        a, g = (np.asarray(v, np.float64).reshape(1, n, n, DIM).transpose(0, 3, 1, 2) for v in (tokens, g))
        e = ex.explain(xs, "gradcam", target=1)
        assert str(ex.adapter.layer_layout) == f"tokens(prefix=0, grid={n}x{n})"
        np.testing.assert_allclose(e.raw, np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a), atol=1e-5)
        assert ex.explain(xs, "ablationcam", target=1).raw.shape == (1, n, n)


def test_feature_tools_read_the_token_layer_on_its_patch_grid(vit, x):
    """feature_maps and deconv_reconstruction at the target token layer use its (N, C, h, w) view, as in
    PyTorch and ONNX (before: a "not a spatial map" error); the reconstruction is A * dA/dx of the
    chosen token channel, by GradientTape through the model."""
    ex = Explainer.from_keras(vit, LAYER, progress=False)
    tokens = keras.Model(vit.inputs, vit.get_layer(LAYER).output)(tf.constant(x)).numpy()
    np.testing.assert_allclose(ex.feature_maps(x, channels=[2, 7]).maps, grid(tokens)[:, [2, 7]], atol=1e-5)
    vis = ex.deconv_reconstruction(x[:1], top_k=1, rule="vanilla")
    (c,), ((i, j),) = vis.meta["channels"], vis.meta["positions"]
    probe = keras.Model(vit.inputs, vit.get_layer(LAYER).output)
    xt = tf.constant(x[:1])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        a = probe(xt)[0, 1 + i * GRID + j, c]                     # token 0 is the class token
    g = tape.gradient(a, xt).numpy()
    np.testing.assert_allclose(vis.images[0], float(a) * g[0], rtol=1e-4, atol=1e-6)
