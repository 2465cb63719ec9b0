//! File formats: checkpoint weights (safetensors, memory-mapped), named host tensors, learned
//! embedding files, PyTorch pickles read without unpickling, TensorBoard event files, and atomic
//! writes.

pub mod atomic_file;
pub mod learned_embeds;
pub mod output_dir;
pub mod tensor_file;
pub mod tensorboard;
pub mod torch_pickle;
pub mod weights;
pub mod zip_archive;
