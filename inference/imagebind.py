"""The ImageBind contract other code and checks import: encoders, config and CLIP tokenizer.

The implementation lives in the pure-torch model package (`inference/model/anomalygpt/imagebind.py`,
`inference/model/anomalygpt/clip_tokenizer.py`); this module is its stable public address::

    from inference.imagebind import ImageBindConfig, ImageBindEncoder, tokenize

    encoder = ImageBindEncoder(ImageBindConfig.huge())
    encoder.load_official(torch.load("imagebind_huge.pth", mmap=True, weights_only=True))
    global_embedding, taps = encoder.encode_image(pixels)  # [B, 1024], 4 x [B, 257, 1280]
    text = encoder.encode_text(tokenize(["a photo of a flawless bottle."]))  # [1, 1024]
"""

from inference.model.anomalygpt.clip_tokenizer import ClipTokenizer, tokenize
from inference.model.anomalygpt.imagebind import ImageBindConfig, ImageBindEncoder, ImageFeatures

__all__ = ["ClipTokenizer", "ImageBindConfig", "ImageBindEncoder", "ImageFeatures", "tokenize"]
