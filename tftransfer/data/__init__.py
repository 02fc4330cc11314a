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

from tftransfer.data.cache import default_image_cache_dir
from tftransfer.data.check import DataReport, check_data, check_images, list_class_folder
from tftransfer.data.decode import IMAGE_EXTENSIONS, decode_image, jpeg_ratio
from tftransfer.data.identity import DataIdentity, identify
from tftransfer.data.loader import DataSplits
from tftransfer.data.sources import csv_file, image_folder, load_data, numpy_arrays
from tftransfer.data.tf_data import dataset_source, tfds_dataset

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
