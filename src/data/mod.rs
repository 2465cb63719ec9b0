//! Training data: image files read as RGB, cropped and resized as the reference trainers do,
//! captions from the prompt templates or caption files, and the per-epoch order.

pub mod captions;
pub mod dataset;
pub mod image_file;
pub mod loss_masks;
pub mod resize;
pub mod templates;
