"""Lab images: the root filesystems labs run in (recipes, cache, build, verify)."""
from labkit.images.build import (
                                 MARKER,
                                 REQUIRED_TOOLS,
                                 ImageInfo,
                                 build_image,
                                 cache_dir,
                                 ensure_image,
                                 image_info,
                                 image_path,
                                 images_dir,
                                 labs_using,
                                 list_images,
                                 prune,
                                 remove_image,
                                 verify_image,
)
from labkit.images.recipes import RECIPES, Recipe

__all__ = ["MARKER", "RECIPES", "REQUIRED_TOOLS", "ImageInfo", "Recipe", "build_image", "cache_dir",
           "ensure_image", "image_info", "image_path", "images_dir", "labs_using", "list_images",
           "prune", "remove_image", "verify_image"]
