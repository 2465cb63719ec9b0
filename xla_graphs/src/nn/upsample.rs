//! Nearest-neighbour 2x upsampling of NCHW images (diffusers' `Upsample2D`).

use crate::{Result, Tensor};

/// `[N, C, H, W] -> [N, C, 2H, 2W]`, each pixel repeated in a 2x2 block.
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let d = x.dims();
    if d.len() != 4 {
        return Err(x
            .graph()
            .op_error("upsample_nearest_2x", &[x], "needs [N, C, H, W]".into()));
    }
    x.broadcast_in_dim(&[d[0], d[1], d[2], 2, d[3], 2], &[0, 1, 2, 4])?
        .reshape(&[d[0], d[1], 2 * d[2], 2 * d[3]])
}
