//! Built-in primitives: each op of the table called by name, routed by its class (the
//! type rule) to the arguments it needs: axes, reductions, transposes, layout ops with
//! static sizes, concatenation, gathers, and the static built-ins (`size`, `full`, `random`).

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
    pub(super) fn primitive(
        &mut self,
        op: Op,
        class: Class,
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let name = op.mnemonic();
        let Sig::Call(params, required) = op.info().sig else {
            self.report(errors::op_rule(
                span,
                name,
                format!("`{name}` is not callable by name"),
            ));
            return Val::Error;
        };
        let Some(slots) = self.bind_args(name, params, args, span) else {
            return Val::Error;
        };
        let mut vals = Vec::new();
        let mut spans = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some((v, s)) => {
                    if matches!(v, Val::Error) {
                        return Val::Error;
                    }
                    vals.push(Some(v));
                    spans.push(s);
                }
                None if i < required => {
                    self.report(errors::missing_arg(span, name, params[i]));
                    return Val::Error;
                }
                None => {
                    vals.push(None);
                    spans.push(span);
                }
            }
        }
        match class {
            Class::Unary | Class::Binary | Class::Compare | Class::Select => {
                let vs: Vec<Val> = vals.into_iter().map(|v| v.expect("all required")).collect();
                self.elementwise(op, &vs, &spans, span)
            }
            Class::MatMul => {
                let mut it = vals.into_iter().map(|v| v.expect("required"));
                let (a, b) = (it.next().expect("two"), it.next().expect("two"));
                self.matmul(a, b, spans[0], spans[1], span)
            }
            Class::Reduce => self.reduce(op, vals, &spans, span),
            Class::Transpose => self.transpose(vals, &spans, span),
            Class::Given
                if matches!(op, Op::Im2col | Op::Col2im | Op::Slice | Op::Pad | Op::Iota) =>
            {
                self.layout(op, vals, &spans, span)
            }
            Class::Given if matches!(op, Op::Gather | Op::ScatterAdd) => {
                self.take(op, vals, &spans, span)
            }
            Class::Concat => self.concat(vals, &spans, span, false),
            Class::Attention => self.attention(vals, &spans, span),
            Class::Given => self.given(op, vals, &spans, span),
            // Written as a `grad` block or a `for .. in steps(..)` loop, never called (their
            // `Sig` is `None`).
            Class::CustomGrad | Class::Scan => {
                let why = format!("`{name}` is written as a `grad` block or a `steps` loop");
                self.report(errors::op_rule(span, name, why));
                Val::Error
            }
        }
    }

    pub(super) fn tensor_arg(&mut self, v: &Val, span: Span) -> Option<Value> {
        match v {
            Val::Tensor(t) => Some(*t),
            Val::Error => None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a tensor", &d));
                None
            }
        }
    }

    pub(super) fn axes(
        &mut self,
        v: Option<&Val>,
        ty: &TensorType,
        span: Span,
    ) -> Option<Vec<usize>> {
        let rank = ty.rank() as i64;
        let list: Vec<Val> = match v {
            None => return Some((0..ty.rank()).collect()),
            Some(Val::List(xs)) => xs.clone(),
            Some(other) => vec![other.clone()],
        };
        let mut axes = Vec::new();
        for a in list {
            let Val::Int(i) = a else {
                let d = self.describe(&a);
                self.report(errors::kind(span, "an axis (an integer)", &d));
                return None;
            };
            let norm = if i < 0 { i + rank } else { i };
            if norm < 0 || norm >= rank {
                self.report(errors::axis(span, i, &ty.to_string()));
                return None;
            }
            axes.push(norm as usize);
        }
        axes.sort_unstable();
        axes.dedup();
        Some(axes)
    }

    pub(super) fn reduce(
        &mut self,
        op: Op,
        vals: Vec<Option<Val>>,
        spans: &[Span],
        span: Span,
    ) -> Val {
        let Some(x) = vals[0].as_ref().and_then(|v| self.tensor_arg(v, spans[0])) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let Some(axes) = self.axes(vals[1].as_ref(), &ty, spans[1]) else {
            return Val::Error;
        };
        let keepdims = match &vals[2] {
            None => false,
            Some(Val::Bool(b)) => *b,
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[2], "a boolean", &d));
                return Val::Error;
            }
        };
        if op == Op::Mean && !ty.dtype.is_float() {
            self.report(errors::float_needed(span, "mean", &ty.to_string()));
            return Val::Error;
        }
        let r = match self.func.build(op, vec![x], Attr::Axes(axes.clone()), None) {
            Ok(r) => r,
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                return Val::Error;
            }
        };
        if !keepdims {
            return Val::Tensor(r);
        }
        let dims = ty
            .shape
            .dims()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        Val::Tensor(self.func.push(
            Op::Reshape,
            vec![r],
            Attr::None,
            TensorType::new(ty.dtype, Shape(dims)),
        ))
    }

    pub(super) fn transpose(&mut self, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let Some(x) = vals[0].as_ref().and_then(|v| self.tensor_arg(v, spans[0])) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let perm: Vec<usize> = match &vals[1] {
            None => {
                let r = ty.rank();
                let mut p: Vec<usize> = (0..r).collect();
                if r >= 2 {
                    p.swap(r - 2, r - 1);
                }
                p
            }
            Some(Val::List(xs)) => {
                let mut p = Vec::new();
                for v in xs {
                    match v {
                        Val::Int(i) if *i >= 0 => p.push(*i as usize),
                        other => {
                            let d = self.describe(other);
                            self.report(errors::kind(spans[1], "a list of axes", &d));
                            return Val::Error;
                        }
                    }
                }
                p
            }
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[1], "a list of axes", &d));
                return Val::Error;
            }
        };
        match self
            .func
            .build(Op::Transpose, vec![x], Attr::Perm(perm), None)
        {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, "transpose", msg));
                Val::Error
            }
        }
    }

    /// `size(x, axis)`: the static size of one axis (an integer, or a dimension name).
    pub(super) fn size(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("size", &["x", "axis"], args, span) else {
            return Val::Error;
        };
        let [Some((x, xs)), axis] = &slots[..] else {
            self.report(errors::missing_arg(span, "size", "x"));
            return Val::Error;
        };
        let Some(x) = self.tensor_arg(x, *xs) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let (av, aspan) = axis.clone().unwrap_or((Val::Int(-1), span));
        let Some(a) = self.axes(Some(&av), &ty, aspan) else {
            return Val::Error;
        };
        let [a] = a[..] else {
            self.report(errors::kind(aspan, "one axis", "a list"));
            return Val::Error;
        };
        match &ty.shape.0[a] {
            Dim::Known(n) => Val::Int(*n as i64),
            Dim::Sym(s) => Val::Dim(s.clone()),
        }
    }

    /// `full(shape, value)`: a constant f32 tensor.
    pub(super) fn full(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("full", &["shape", "value"], args, span) else {
            return Val::Error;
        };
        let [Some((shape, ss)), value] = &slots[..] else {
            self.report(errors::missing_arg(span, "full", "shape"));
            return Val::Error;
        };
        let Some(dims) = self.dims_arg(shape, *ss) else {
            return Val::Error;
        };
        let v = match value {
            None => 0.0,
            Some((Val::Int(i), _)) => *i as f64,
            Some((Val::Float(f), _)) => *f,
            Some((Val::Error, _)) => return Val::Error,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a number", &d));
                return Val::Error;
            }
        };
        let ty = TensorType::new(DType::F32, Shape(dims));
        if let Some(why) = nnc_ir::limits::too_large(&ty) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        Val::Tensor(self.constant(v, ty))
    }

    /// `random(shape)`: uniform noise in [0, 1), a new draw at every training step. Only
    /// in training mode; the step's key is the function's `noise_key` input, added on
    /// first use.
    pub(super) fn random(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("random", &["shape"], args, span) else {
            return Val::Error;
        };
        let [Some((shape, ss))] = &slots[..] else {
            self.report(errors::missing_arg(span, "random", "shape"));
            return Val::Error;
        };
        let Some(dims) = self.dims_arg(shape, *ss) else {
            return Val::Error;
        };
        self.read_training = true;
        if !self.training {
            self.report(errors::random_outside_training(span));
            return Val::Error;
        }
        let key = match self.func.inputs.iter().position(|a| a.name == NOISE_KEY) {
            Some(i) => Value::Input(i as u32),
            None => self
                .func
                .add_input(NOISE_KEY, TensorType::scalar(DType::I32)),
        };
        self.randoms += 1;
        let stream = Attr::Value(f64::from(self.randoms));
        match self.noise(key, dims, stream, span) {
            Some(v) => Val::Tensor(v),
            None => Val::Error,
        }
    }

    /// Uniform noise of shape `dims` from `stream`: a `random` node, or inside a `steps`
    /// body a stand-in for one step's draw, which the loop makes a sequence of all its
    /// steps' draws (`steps_loop`), so that each step draws its own.
    pub(super) fn noise(
        &mut self,
        key: Value,
        dims: Vec<Dim>,
        stream: Attr,
        span: Span,
    ) -> Option<Value> {
        let ty = TensorType::new(DType::F32, Shape(dims.clone()));
        if let Some(frame) = self.noise.last_mut() {
            let h = self.func.push(Op::LoopVar, vec![], Attr::None, ty);
            frame.push((h, dims, stream));
            return Some(h);
        }
        match self.build_given(Op::Random, vec![key], stream, ty, span) {
            Val::Tensor(v) => Some(v),
            _ => None,
        }
    }

    /// A non-negative static integer argument.
    pub(super) fn count_arg(&mut self, v: Option<&(Val, Span)>, default: i64) -> Option<usize> {
        match v {
            None => Some(default as usize),
            Some((Val::Int(n), _)) if *n >= 0 => Some(*n as usize),
            Some((Val::Error, _)) => None,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a non-negative integer", &d));
                None
            }
        }
    }

    /// A window size: one integer for both axes, or a list of two.
    pub(super) fn pair_arg(
        &mut self,
        v: Option<&(Val, Span)>,
        default: usize,
    ) -> Option<[usize; 2]> {
        match v {
            None => Some([default; 2]),
            Some((Val::Int(n), _)) if *n >= 0 => Some([*n as usize; 2]),
            Some((Val::List(xs), _))
                if xs.len() == 2 && xs.iter().all(|x| matches!(x, Val::Int(n) if *n >= 0)) =>
            {
                let n = |x: &Val| if let Val::Int(n) = x { *n as usize } else { 0 };
                Some([n(&xs[0]), n(&xs[1])])
            }
            Some((Val::Error, _)) => None,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a size (an integer or a list of two)", &d));
                None
            }
        }
    }

    /// A list of known or symbolic dimensions (`[B, 4]`).
    pub(super) fn dims_arg(&mut self, v: &Val, span: Span) -> Option<Vec<Dim>> {
        let Val::List(items) = v else {
            let d = self.describe(v);
            self.report(errors::kind(span, "a list of dimensions", &d));
            return None;
        };
        let mut dims = Vec::new();
        for it in items {
            match it {
                Val::Int(n) if *n > 0 => dims.push(Dim::Known(*n as u64)),
                Val::Dim(s) => dims.push(Dim::Sym(s.clone())),
                Val::Error => return None,
                other => {
                    let d = self.describe_dim(other);
                    self.report(errors::bad_dim(span, &d));
                    return None;
                }
            }
        }
        Some(dims)
    }

    /// Windows (`im2col`, `col2im`), slices and padding along an axis, and `iota`.
    pub(super) fn layout(
        &mut self,
        op: Op,
        vals: Vec<Option<Val>>,
        spans: &[Span],
        span: Span,
    ) -> Val {
        let slots: Vec<Option<(Val, Span)>> = vals
            .into_iter()
            .zip(spans)
            .map(|(v, s)| v.map(|v| (v, *s)))
            .collect();
        if op == Op::Iota {
            let Some(dims) = slots[0].as_ref().and_then(|(v, s)| self.dims_arg(v, *s)) else {
                return Val::Error;
            };
            let ty = TensorType::new(DType::F32, Shape(dims));
            let Some(axes) = self.axes(slots[1].as_ref().map(|(v, _)| v), &ty, spans[1]) else {
                return Val::Error;
            };
            return self.build_given(op, vec![], Attr::Axes(axes), ty, span);
        }
        let Some(x) = slots[0].as_ref().and_then(|(v, s)| self.tensor_arg(v, *s)) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        match op {
            Op::Im2col | Op::Col2im => {
                let k = usize::from(op == Op::Col2im);
                let Some(kernel) = self.pair_arg(slots[1 + k].as_ref(), 1) else {
                    return Val::Error;
                };
                let Some(stride) = self.pair_arg(slots[2 + k].as_ref(), 1) else {
                    return Val::Error;
                };
                let Some(pad) = self.pair_arg(slots[3 + k].as_ref(), 0) else {
                    return Val::Error;
                };
                let attr = Attr::Window {
                    kernel,
                    stride,
                    pad,
                };
                let result = if op == Op::Im2col {
                    nnc_ir::im2col_type(&ty, kernel, stride, pad)
                } else {
                    match self.pair_arg(slots[1].as_ref(), 1) {
                        Some([h, w]) if ty.rank() == 6 => {
                            let mut d = ty.shape.0[..2].to_vec();
                            d.extend([Dim::Known(h as u64), Dim::Known(w as u64)]);
                            Ok(TensorType::new(ty.dtype, Shape(d)))
                        }
                        Some(_) => Err(nnc_ir::Error::Type(format!(
                            "`col2im` needs windows [N, C, KH, KW, OH, OW], found {ty}"
                        ))),
                        None => return Val::Error,
                    }
                };
                match result {
                    Ok(t) => self.build_given(op, vec![x], attr, t, span),
                    Err(msg) => {
                        self.report(errors::op_rule(span, op.mnemonic(), msg));
                        Val::Error
                    }
                }
            }
            _ => {
                // slice(x, start, end, axis) / pad(x, before, after, axis)
                let Some(axes) = self.axes(
                    Some(slots[3].as_ref().map_or(&Val::Int(0), |(v, _)| v)),
                    &ty,
                    spans[3],
                ) else {
                    return Val::Error;
                };
                let axis = axes[0];
                let (Some(a), Some(b)) = (
                    self.count_arg(slots[1].as_ref(), 0),
                    self.count_arg(slots[2].as_ref(), 0),
                ) else {
                    return Val::Error;
                };
                let Some(len) = ty.shape.0[axis].known() else {
                    let msg = format!("axis {axis} of {ty} has no known size");
                    self.report(errors::op_rule(span, op.mnemonic(), msg));
                    return Val::Error;
                };
                let (new_len, start) = if op == Op::Slice {
                    if a >= b || b as u64 > len {
                        let msg =
                            format!("[{a}, {b}) is not a non-empty range of axis {axis} of {ty}");
                        self.report(errors::op_rule(span, "slice", msg));
                        return Val::Error;
                    }
                    ((b - a) as u64, a)
                } else {
                    (len + (a + b) as u64, a)
                };
                let mut dims = ty.shape.0.clone();
                dims[axis] = Dim::Known(new_len);
                let t = TensorType::new(ty.dtype, Shape(dims));
                self.build_given(op, vec![x], Attr::Offset { axis, start }, t, span)
            }
        }
    }

    /// `concat([a, b, ..], axis = 0)`: tensors joined along an axis; with `stack`, along a
    /// new axis (each operand gets a size-1 axis there first).
    pub(super) fn concat(
        &mut self,
        vals: Vec<Option<Val>>,
        spans: &[Span],
        span: Span,
        stack: bool,
    ) -> Val {
        let name = if stack { "stack" } else { "concat" };
        let items = match &vals[0] {
            Some(Val::List(xs)) if !xs.is_empty() => xs.clone(),
            Some(Val::Tensor(t)) => vec![Val::Tensor(*t)],
            Some(Val::Error) | None => return Val::Error,
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[0], "a list of tensors", &d));
                return Val::Error;
            }
        };
        let mut parts = Vec::new();
        for v in &items {
            let Some(t) = self.tensor_arg(v, spans[0]) else {
                return Val::Error;
            };
            parts.push(t);
        }
        let first = self.ty(parts[0]).clone();
        // `stack`'s axis may be one past the last.
        let probe = if stack {
            let mut d = first.shape.0.clone();
            d.push(Dim::Known(1));
            TensorType::new(first.dtype, Shape(d))
        } else {
            first.clone()
        };
        let axis_val = vals.get(1).cloned().flatten().unwrap_or(Val::Int(0));
        let Some(axes) = self.axes(
            Some(&axis_val),
            &probe,
            spans.get(1).copied().unwrap_or(span),
        ) else {
            return Val::Error;
        };
        let axis = axes[0];
        if stack {
            for p in parts.iter_mut() {
                let t = self.ty(*p).clone();
                let mut d = t.shape.0.clone();
                d.insert(axis.min(d.len()), Dim::Known(1));
                match self.func.build(
                    Op::Reshape,
                    vec![*p],
                    Attr::None,
                    Some(TensorType::new(t.dtype, Shape(d))),
                ) {
                    Ok(v) => *p = v,
                    Err(msg) => {
                        self.report(errors::op_rule(span, name, msg));
                        return Val::Error;
                    }
                }
            }
        }
        match self.func.build(Op::Concat, parts, Attr::Axis(axis), None) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, name, msg));
                Val::Error
            }
        }
    }

    /// `gather(x, ids, axis = 0)`: rows of `x` along `axis` picked by integer ids;
    /// `scatter_add(x, ids, size, axis = 0)`: its adjoint, `x` summed into `size` rows.
    /// `attention(q, k, v, causal = false)`: the scaled dot-product attention primitive.
    fn attention(&mut self, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let mut ts = Vec::new();
        for (v, &s) in vals.iter().zip(spans).take(3) {
            match v.as_ref().and_then(|v| self.tensor_arg(v, s)) {
                Some(t) => ts.push(t),
                None => return Val::Error,
            }
        }
        let causal = match &vals[3] {
            None => false,
            Some(Val::Bool(b)) => *b,
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[3], "true or false", &d));
                return Val::Error;
            }
        };
        match self
            .func
            .build(Op::Attention, ts, Attr::Causal(causal), None)
        {
            Ok(v) => Val::Tensor(v),
            Err(e) => {
                self.report(errors::op_rule(span, "attention", e.to_string()));
                Val::Error
            }
        }
    }

    pub(super) fn take(
        &mut self,
        op: Op,
        vals: Vec<Option<Val>>,
        spans: &[Span],
        span: Span,
    ) -> Val {
        let (Some(xv), Some(iv)) = (vals[0].clone(), vals[1].clone()) else {
            return Val::Error;
        };
        let (Some(x), Some(ids)) = (
            self.tensor_arg(&xv, spans[0]),
            self.tensor_arg(&iv, spans[1]),
        ) else {
            return Val::Error;
        };
        let (xt, it) = (self.ty(x).clone(), self.ty(ids).clone());
        if it.dtype != DType::I32 {
            self.report(errors::labels_dtype(spans[1], &it.to_string()));
            return Val::Error;
        }
        let axis_at = if op == Op::Gather { 2 } else { 3 };
        let axis_val = vals[axis_at].clone().unwrap_or(Val::Int(0));
        let line = self.user_line(span);
        let result = if op == Op::Gather {
            let Some(axes) = self.axes(Some(&axis_val), &xt, spans[axis_at]) else {
                return Val::Error;
            };
            let axis = axes[0];
            let mut dims = xt.shape.0[..axis].to_vec();
            dims.extend(it.shape.0.iter().cloned());
            dims.extend(xt.shape.0[axis + 1..].iter().cloned());
            (axis, TensorType::new(xt.dtype, Shape(dims)))
        } else {
            // The table has x's axes before the ids' axes, `size` rows, then the rest.
            let size = vals[2].clone().map(|v| (v, spans[2]));
            let Some(rows) = self.count_arg(size.as_ref(), 0) else {
                return Val::Error;
            };
            let lead = xt.rank().saturating_sub(it.rank());
            let table_rank = lead + 1;
            let proxy = TensorType::new(xt.dtype, Shape(vec![Dim::Known(1); table_rank.max(1)]));
            let Some(axes) = self.axes(Some(&axis_val), &proxy, spans[axis_at]) else {
                return Val::Error;
            };
            let axis = axes[0];
            if xt.rank() < axis + it.rank() {
                let msg = format!("{xt} has no room for ids {it} at axis {axis}");
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                return Val::Error;
            }
            let mut dims = xt.shape.0[..axis].to_vec();
            dims.push(Dim::Known(rows as u64));
            dims.extend(xt.shape.0[axis + it.rank()..].iter().cloned());
            (axis, TensorType::new(xt.dtype, Shape(dims)))
        };
        let (axis, ty) = result;
        self.build_given(op, vec![x, ids], Attr::Index { axis, line }, ty, span)
    }

    pub(super) fn build_given(
        &mut self,
        op: Op,
        args: Vec<Value>,
        attr: Attr,
        ty: TensorType,
        span: Span,
    ) -> Val {
        if let Some(why) = nnc_ir::limits::too_large(&ty) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        match self.func.build(op, args, attr, Some(ty)) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                Val::Error
            }
        }
    }

    pub(super) fn given(
        &mut self,
        op: Op,
        vals: Vec<Option<Val>>,
        spans: &[Span],
        span: Span,
    ) -> Val {
        let vals: Vec<Val> = vals.into_iter().map(|v| v.expect("all required")).collect();
        let Some(x) = self.tensor_arg(&vals[0], spans[0]) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let target = match op {
            Op::Reshape => {
                let Some(dims) = self.dims_arg(&vals[1], spans[1]) else {
                    return Val::Error;
                };
                let to = TensorType::new(ty.dtype, Shape(dims));
                if ty.shape.volume() != to.shape.volume() {
                    self.report(errors::reshape(span, &ty.to_string(), &to.to_string()));
                    return Val::Error;
                }
                to
            }
            Op::Cast => match &vals[1] {
                Val::DType(d) => ty.with_dtype(*d),
                other => {
                    let d = self.describe(other);
                    self.report(errors::kind(
                        spans[1],
                        "an element type (f32, f64, i32)",
                        &d,
                    ));
                    return Val::Error;
                }
            },
            Op::OneHot => {
                if ty.dtype != DType::I32 {
                    self.report(errors::labels_dtype(spans[0], &ty.to_string()));
                    return Val::Error;
                }
                let n = match &vals[1] {
                    Val::Int(n) if *n > 0 => *n as u64,
                    other => {
                        let d = self.describe_dim(other);
                        self.report(errors::bad_dim(spans[1], &d));
                        return Val::Error;
                    }
                };
                let mut dims = ty.shape.0.clone();
                dims.push(Dim::Known(n));
                TensorType::new(DType::F32, Shape(dims))
            }
            _ => {
                self.report(errors::op_rule(
                    span,
                    op.mnemonic(),
                    format!("`{}` has no elaboration rule", op.mnemonic()),
                ));
                return Val::Error;
            }
        };
        if let Some(why) = nnc_ir::limits::too_large(&target) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        match self.func.build(op, vec![x], Attr::None, Some(target)) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                Val::Error
            }
        }
    }
}
