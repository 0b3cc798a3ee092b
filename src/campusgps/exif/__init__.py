"""Reading photos: pixels with EXIF orientation applied, and the EXIF metadata that matters here."""
from campusgps.exif.image import DEFAULT_MAX_PIXELS, load_image, open_image
from campusgps.exif.metadata import PhotoMeta, gps_exif_bytes, read_metadata

__all__ = ["load_image", "open_image", "DEFAULT_MAX_PIXELS", "PhotoMeta", "read_metadata", "gps_exif_bytes"]
