"""`inference.imagebind` is the public address of the ImageBind contract."""

import dataclasses

import torch

from inference import imagebind


def test_contract_names_and_huge_sizes():
    config = imagebind.ImageBindConfig.huge()
    fields = {f.name for f in dataclasses.fields(config)}
    assert {"vision_width", "vision_layers", "vision_heads", "text_width", "text_layers",
            "text_heads", "embed_dim", "tap_layers"} <= fields
    assert (config.vision_width, config.vision_layers, config.vision_heads) == (1280, 32, 16)
    assert (config.text_width, config.text_layers, config.text_heads) == (1024, 24, 16)
    assert (config.embed_dim, config.tap_layers) == (1024, (7, 15, 23, 31))


def test_tiny_encoder_through_the_public_module():
    torch.manual_seed(0)
    config = imagebind.ImageBindConfig.tiny()
    encoder = imagebind.ImageBindEncoder(config).eval()
    with torch.no_grad():
        features = encoder.encode_image(torch.randn(2, 3, 224, 224))
        text = encoder.encode_text(imagebind.tokenize(["a photo of a damaged bottle.", "x"]))
    assert isinstance(features, imagebind.ImageFeatures)
    global_embedding, taps = features
    assert global_embedding.shape == (2, config.embed_dim)
    assert [tuple(t.shape) for t in taps] == [(2, 257, config.vision_width)] * 4
    assert text.shape == (2, config.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    ids = imagebind.tokenize(["hello world"])
    assert ids.shape == (1, 77)
    assert ids.dtype == torch.long
