"""Data: labelled images in, batched `tf.data` datasets out.

Every source (an image folder, a CSV of paths and labels, a TFDS name or
`ImageFolder`, numpy arrays, a `tf.data.Dataset`) gives the same
`DataSplits`: `(images, labels)` batches of float32 RGB pixels in
`[0, 255]` at the base's input size, int32 class indices (or, for labels
that are not exclusive, float32 multi-hot rows), and the class names in
label order. `load_data` picks the source from its argument.

The path of the data, one module each:

* `sources`, `tf_data`: the readers, and `load_data`;
* `multi_hot`: multi-label sources (a CSV of label sets, multi-hot arrays);
* `check`: lists files and decodes each once, naming every one skipped;
* `decode`: the decoder that training and the export share;
* `cache`: where the decoded pixels are kept between epochs and runs;
* `loader`: splits, shuffling and batching;
* `identity`: what a dataset holds, read from its content (the feature
  cache's key, the class counts).
"""

from tftransfer._lazy import lazy_names as _lazy_names

#: Where each name lives; loaded on first use (PEP 562), like `tftransfer`'s.
_PUBLIC = {
    "DataIdentity": "tftransfer.data.identity",
    "DataReport": "tftransfer.data.check",
    "DataSplits": "tftransfer.data.loader",
    "IMAGE_EXTENSIONS": "tftransfer.data.decode",
    "check_data": "tftransfer.data.check",
    "check_images": "tftransfer.data.check",
    "csv_file": "tftransfer.data.sources",
    "dataset_source": "tftransfer.data.tf_data",
    "decode_image": "tftransfer.data.decode",
    "default_image_cache_dir": "tftransfer.data.cache",
    "identify": "tftransfer.data.identity",
    "image_folder": "tftransfer.data.sources",
    "jpeg_ratio": "tftransfer.data.decode",
    "list_class_folder": "tftransfer.data.check",
    "load_data": "tftransfer.data.sources",
    "numpy_arrays": "tftransfer.data.sources",
    "tfds_dataset": "tftransfer.data.tf_data",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataIdentity",
    "DataReport",
    "DataSplits",
    "check_data",
    "check_images",
    "csv_file",
    "dataset_source",
    "decode_image",
    "default_image_cache_dir",
    "identify",
    "image_folder",
    "jpeg_ratio",
    "list_class_folder",
    "load_data",
    "numpy_arrays",
    "tfds_dataset",
]


__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)
