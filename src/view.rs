//! Input views: turn a stream frame into one model's input tensor (crop, pool, upsample, pad, invert,
//! normalise, channels), as described by data in the manifest. Prepared once, then allocation-free.

use crate::manifest::ViewOp;

/// Image shape while a view is applied (height, width, channels), stored HWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub fn len(self) -> usize {
        self.h * self.w * self.c
    }
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ViewError {
    #[error("view op {index} ({op}): {why}")]
    Op { index: usize, op: &'static str, why: String },
    #[error("view output has {got} values but the model input shape {shape:?} needs {need}")]
    Size { got: usize, need: usize, shape: Vec<u32> },
}

/// The most values (height × width × channels) any step of a view may produce: 16 Mi values, 64 MiB
/// per scratch buffer.
pub const MAX_VIEW_VALUES: usize = 1 << 24;

/// A view checked against the frame shape, with its scratch buffers allocated.
#[derive(Clone, Debug)]
pub struct View {
    ops: Vec<ViewOp>,
    shapes: Vec<Shape>,
    a: Vec<f32>,
    b: Vec<f32>,
}

fn op_name(op: &ViewOp) -> &'static str {
    match op {
        ViewOp::Crop { .. } => "crop",
        ViewOp::Pool { .. } => "pool",
        ViewOp::Upsample { .. } => "upsample",
        ViewOp::Pad { .. } => "pad",
        ViewOp::Invert {} => "invert",
        ViewOp::Normalize { .. } => "normalize",
        ViewOp::Channels { .. } => "channels",
    }
}

impl View {
    /// Check every op against the shape it receives and size the buffers.
    pub fn prepare(ops: &[ViewOp], frame: Shape) -> Result<View, ViewError> {
        let mut shapes = vec![frame];
        let mut s = frame;
        // The range of values the image can hold after each op (pixels start in 0..=255): every
        // value a view can produce must be finite, or the model is handed inf.
        let mut range = (0.0f32, 255.0f32);
        for (index, op) in ops.iter().enumerate() {
            let bad = |why: String| ViewError::Op { index, op: op_name(op), why };
            s = match *op {
                ViewOp::Crop { x, y, w, h } => {
                    let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
                    if w == 0 || h == 0 {
                        return Err(bad(format!("window {w}x{h} is empty")));
                    }
                    if x + w > s.w || y + h > s.h {
                        return Err(bad(format!("window {w}x{h} at ({x},{y}) is outside {}x{}", s.w, s.h)));
                    }
                    Shape { h, w, c: s.c }
                }
                ViewOp::Pool { k } => {
                    let k = k as usize;
                    if k == 0 || s.h % k != 0 || s.w % k != 0 {
                        return Err(bad(format!("k = {k} does not divide {}x{}", s.w, s.h)));
                    }
                    Shape { h: s.h / k, w: s.w / k, c: s.c }
                }
                ViewOp::Upsample { k } => {
                    if k == 0 || k > 64 {
                        return Err(bad(format!("k = {k} must be in 1..=64")));
                    }
                    let k = k as usize;
                    match (s.h.checked_mul(k), s.w.checked_mul(k)) {
                        (Some(h), Some(w)) => Shape { h, w, c: s.c },
                        _ => return Err(bad(format!("{}x{} times {k} overflows", s.w, s.h))),
                    }
                }
                ViewOp::Pad { top, bottom, left, right, value } => {
                    if !value.is_finite() {
                        return Err(bad(format!("value {value} is not finite")));
                    }
                    // In usize, so that sums of u32 paddings cannot wrap around.
                    let (t, b, l, r) = (top as usize, bottom as usize, left as usize, right as usize);
                    range = (range.0.min(value), range.1.max(value));
                    match (s.h.checked_add(t + b), s.w.checked_add(l + r)) {
                        (Some(h), Some(w)) => Shape { h, w, c: s.c },
                        _ => return Err(bad(format!("padding {t}+{b}, {l}+{r} overflows"))),
                    }
                }
                ViewOp::Invert {} => {
                    range = (255.0 - range.1, 255.0 - range.0);
                    s
                }
                ViewOp::Normalize { mean, std } => {
                    if !mean.is_finite() {
                        return Err(bad(format!("mean {mean} must be finite")));
                    }
                    if !(std.is_finite() && std != 0.0) {
                        return Err(bad(format!("std {std} must be finite and non-zero")));
                    }
                    let f = |v: f32| (v / 255.0 - mean) / std;
                    let (a, b) = (f(range.0), f(range.1));
                    if !(a.is_finite() && b.is_finite()) {
                        return Err(bad(format!(
                            "mean {mean}, std {std} map the values {}..{} past the largest finite number",
                            range.0, range.1
                        )));
                    }
                    range = (a.min(b), a.max(b));
                    s
                }
                ViewOp::Channels { n } => {
                    if n == 0 {
                        return Err(
                            bad("n = 0: the image must be replicated into at least 1 channel".into()),
                        );
                    }
                    if s.c != 1 {
                        return Err(bad(format!("replicates a 1-channel image, got {} channels", s.c)));
                    }
                    Shape { c: n as usize, ..s }
                }
            };
            // Every intermediate image must fit the limit: a view is sized from a file, and its
            // buffers are allocated here.
            let len = s.h.checked_mul(s.w).and_then(|x| x.checked_mul(s.c));
            if len.is_none_or(|n| n > MAX_VIEW_VALUES) {
                return Err(bad(format!(
                    "gives a {}x{}x{} image, more than the limit of {MAX_VIEW_VALUES} values",
                    s.w, s.h, s.c
                )));
            }
            shapes.push(s);
        }
        let max = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
        Ok(View { ops: ops.to_vec(), shapes, a: vec![0.0; max], b: vec![0.0; max] })
    }

    /// Check the output length against a model input shape.
    pub fn check_input(&self, shape: &[u32]) -> Result<(), ViewError> {
        // Checked: dimensions from a manifest may multiply past usize (saturating makes it a mismatch).
        let need: usize = shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d as usize));
        let got = self.output_len();
        if need != got {
            return Err(ViewError::Size { got, need, shape: shape.to_vec() });
        }
        Ok(())
    }

    pub fn output_shape(&self) -> Shape {
        *self.shapes.last().unwrap()
    }

    pub fn output_len(&self) -> usize {
        self.output_shape().len()
    }

    /// Apply the view to a frame; writes `output_len()` values, channel-major (CHW).
    pub fn apply(&mut self, frame: &[u8], out: &mut [f32]) {
        let first = self.shapes[0];
        assert_eq!(frame.len(), first.len(), "frame length");
        assert_eq!(out.len(), self.output_len(), "view output length");
        for (d, &p) in self.a.iter_mut().zip(frame) {
            *d = p as f32;
        }
        // A trailing `channels` replicates a plane: done below as plane copies into `out`.
        let mut ops = self.ops.len();
        let replicate = match self.ops.last() {
            Some(&ViewOp::Channels { n }) => {
                ops -= 1;
                n as usize
            }
            _ => 1,
        };
        for i in 0..ops {
            let (si, so) = (self.shapes[i], self.shapes[i + 1]);
            match self.ops[i] {
                // Pointwise ops work in place.
                ViewOp::Invert {} => self.a[..si.len()].iter_mut().for_each(|v| *v = 255.0 - *v),
                ViewOp::Normalize { mean, std } => {
                    self.a[..si.len()].iter_mut().for_each(|v| *v = (*v / 255.0 - mean) / std)
                }
                ref op => {
                    let (src, dst) = (&self.a[..si.len()], &mut self.b[..so.len()]);
                    apply_op(op, si, so, src, dst);
                    std::mem::swap(&mut self.a, &mut self.b);
                }
            }
        }
        // HWC → CHW (a plain copy for one channel), then the replicated planes.
        let s = self.shapes[ops];
        let plane = s.h * s.w;
        if s.c == 1 {
            out[..plane].copy_from_slice(&self.a[..plane]);
        } else {
            for c in 0..s.c {
                for y in 0..s.h {
                    for x in 0..s.w {
                        out[(c * s.h + y) * s.w + x] = self.a[(y * s.w + x) * s.c + c];
                    }
                }
            }
        }
        let first_len = plane * s.c;
        for r in 1..replicate {
            out.copy_within(..first_len, r * first_len);
        }
    }
}

fn apply_op(op: &ViewOp, si: Shape, so: Shape, src: &[f32], dst: &mut [f32]) {
    let at = |s: Shape, y: usize, x: usize, c: usize| (y * s.w + x) * s.c + c;
    match *op {
        ViewOp::Crop { x: x0, y: y0, .. } => {
            for y in 0..so.h {
                for x in 0..so.w {
                    for c in 0..so.c {
                        dst[at(so, y, x, c)] = src[at(si, y + y0 as usize, x + x0 as usize, c)];
                    }
                }
            }
        }
        ViewOp::Pool { k } => {
            let k = k as usize;
            let div = (k * k) as f32;
            for y in 0..so.h {
                for x in 0..so.w {
                    for c in 0..so.c {
                        let mut sum = 0.0f32;
                        for dy in 0..k {
                            for dx in 0..k {
                                sum += src[at(si, y * k + dy, x * k + dx, c)];
                            }
                        }
                        dst[at(so, y, x, c)] = sum / div;
                    }
                }
            }
        }
        ViewOp::Upsample { k } => {
            let k = k as usize;
            for y in 0..so.h {
                for x in 0..so.w {
                    for c in 0..so.c {
                        dst[at(so, y, x, c)] = src[at(si, y / k, x / k, c)];
                    }
                }
            }
        }
        ViewOp::Pad { top, left, value, .. } => {
            let (t, l) = (top as usize, left as usize);
            for y in 0..so.h {
                for x in 0..so.w {
                    for c in 0..so.c {
                        let inside = y >= t && y < t + si.h && x >= l && x < l + si.w;
                        dst[at(so, y, x, c)] = if inside { src[at(si, y - t, x - l, c)] } else { value };
                    }
                }
            }
        }
        ViewOp::Invert {} => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = 255.0 - s;
            }
        }
        ViewOp::Normalize { mean, std } => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s / 255.0 - mean) / std;
            }
        }
        ViewOp::Channels { n } => {
            for (i, &s) in src.iter().enumerate() {
                for c in 0..n as usize {
                    dst[i * n as usize + c] = s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_compose_in_order() {
        let ops = vec![
            ViewOp::Crop { x: 1, y: 0, w: 2, h: 2 },
            ViewOp::Pool { k: 2 },
            ViewOp::Upsample { k: 2 },
            ViewOp::Pad { top: 1, bottom: 0, left: 0, right: 1, value: 9.0 },
            ViewOp::Invert {},
            ViewOp::Channels { n: 2 },
        ];
        // 3x3 frame 0..9
        let mut v = View::prepare(&ops, Shape { h: 3, w: 3, c: 1 }).unwrap();
        assert_eq!(v.output_shape(), Shape { h: 3, w: 3, c: 2 });
        let mut out = vec![0.0; 18];
        v.apply(&[0, 1, 2, 3, 4, 5, 6, 7, 8], &mut out);
        // crop [[1,2],[4,5]] → pool 3 → up [[3,3],[3,3]] → pad top/right with 9 → invert
        let plane = [246.0, 246.0, 246.0, 252.0, 252.0, 246.0, 252.0, 252.0, 246.0];
        assert_eq!(&out[..9], &plane);
        assert_eq!(&out[9..], &plane);
    }

    #[test]
    fn normalize_matches_formula() {
        let mut v =
            View::prepare(&[ViewOp::Normalize { mean: 0.5, std: 0.5 }], Shape { h: 1, w: 2, c: 1 }).unwrap();
        let mut out = [0.0; 2];
        v.apply(&[0, 255], &mut out);
        assert_eq!(out, [-1.0, 1.0]);
    }

    #[test]
    fn bad_views_name_the_op() {
        let e = View::prepare(&[ViewOp::Pool { k: 3 }], Shape { h: 28, w: 28, c: 1 }).unwrap_err();
        assert_eq!(e.to_string(), "view op 0 (pool): k = 3 does not divide 28x28");
        let e = View::prepare(
            &[ViewOp::Invert {}, ViewOp::Crop { x: 20, y: 0, w: 10, h: 10 }],
            Shape { h: 28, w: 28, c: 1 },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("view op 1 (crop)"), "{e}");
        let v = View::prepare(&[ViewOp::Pool { k: 2 }], Shape { h: 28, w: 28, c: 1 }).unwrap();
        assert!(v.check_input(&[1, 1, 14, 14]).is_ok());
        assert!(v.check_input(&[1, 784]).unwrap_err().to_string().contains("needs 784"));
    }
}
