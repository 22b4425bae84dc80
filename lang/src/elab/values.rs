//! Static values and implicit broadcasting: constants, numbers as tensors, the language's
//! broadcasting made explicit (`reshape` + `broadcast`), elementwise ops and static folding
//! (the op table's scalar definitions).

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
    pub(super) fn constant(&mut self, value: f64, ty: TensorType) -> Value {
        self.func.push(Op::Const, vec![], Attr::Value(value), ty)
    }

    /// Turns a static number into a tensor of the given type, or checks a tensor.
    pub(super) fn as_tensor_like(
        &mut self,
        v: &Val,
        like: &TensorType,
        span: Span,
        op: &str,
    ) -> Option<Value> {
        match v {
            Val::Tensor(t) => Some(*t),
            Val::Int(i) => Some(self.constant(*i as f64, like.clone())),
            Val::Float(f) => {
                if !like.dtype.is_float() && f.fract() != 0.0 {
                    self.report(errors::dtype_mismatch(
                        span,
                        op,
                        &like.to_string(),
                        "a float constant",
                    ));
                    return None;
                }
                Some(self.constant(*f, like.clone()))
            }
            Val::Bool(b) => Some(self.constant(f64::from(u8::from(*b)), like.clone())),
            Val::Error => None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a tensor or a number", &d));
                None
            }
        }
    }

    /// Broadcasts `v` to `shape` by numpy's rules: align from the last axis; sizes equal or 1.
    pub(super) fn broadcast_to(&mut self, v: Value, shape: &Shape) -> Value {
        let ty = self.ty(v).clone();
        if ty.shape == *shape {
            return v;
        }
        let offset = shape.rank() - ty.rank();
        let mut kept = Vec::new();
        let mut dims = Vec::new();
        for (i, d) in ty.shape.dims().iter().enumerate() {
            if *d == shape.0[offset + i] {
                kept.push(d.clone());
                dims.push(offset + i);
            }
        }
        let mut v = v;
        if kept.len() != ty.rank() {
            v = self.func.push(
                Op::Reshape,
                vec![v],
                Attr::None,
                TensorType::new(ty.dtype, Shape(kept)),
            );
        }
        self.func.push(
            Op::Broadcast,
            vec![v],
            Attr::Dims(dims),
            TensorType::new(ty.dtype, shape.clone()),
        )
    }

    pub(super) fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
        let r = a.rank().max(b.rank());
        let one = Dim::Known(1);
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let da = if i + a.rank() >= r {
                &a.0[i + a.rank() - r]
            } else {
                &one
            };
            let db = if i + b.rank() >= r {
                &b.0[i + b.rank() - r]
            } else {
                &one
            };
            out.push(if da == db || *db == one {
                da.clone()
            } else if *da == one {
                db.clone()
            } else {
                return None;
            });
        }
        Some(Shape(out))
    }

    /// Applies an elementwise primitive to values, broadcasting them to a common shape.
    pub(super) fn elementwise(&mut self, op: Op, args: &[Val], spans: &[Span], span: Span) -> Val {
        let name = op.mnemonic();
        if args.iter().any(|a| matches!(a, Val::Error)) {
            return Val::Error;
        }
        // All static: fold.
        if args
            .iter()
            .all(|a| matches!(a, Val::Int(_) | Val::Float(_) | Val::Dim(_) | Val::Bool(_)))
        {
            return self.fold(op, args, span);
        }
        // The common type: dtype of the tensors (which must agree), shape broadcast.
        let mut common: Option<TensorType> = None;
        for (i, a) in args.iter().enumerate() {
            let Val::Tensor(t) = a else {
                if !matches!(a, Val::Int(_) | Val::Float(_) | Val::Bool(_)) {
                    let d = self.describe(a);
                    self.report(errors::kind(spans[i], "a tensor or a number", &d));
                    return Val::Error;
                }
                continue;
            };
            // `select`'s condition may have another element type than its branches.
            if op == Op::Select && i == 0 {
                continue;
            }
            let ty = self.ty(*t).clone();
            common = Some(match common {
                None => ty,
                Some(c) => {
                    if c.dtype != ty.dtype {
                        self.report(errors::dtype_mismatch(
                            span,
                            name,
                            &c.to_string(),
                            &ty.to_string(),
                        ));
                        return Val::Error;
                    }
                    match Self::broadcast_shapes(&c.shape, &ty.shape) {
                        Some(s) => TensorType::new(c.dtype, s),
                        None => {
                            self.report(errors::broadcast(
                                span,
                                name,
                                &c.to_string(),
                                &ty.to_string(),
                            ));
                            return Val::Error;
                        }
                    }
                }
            });
        }
        let mut common = match common {
            Some(c) => c,
            // Only the condition of a select is a tensor: branches take f32.
            None => TensorType::scalar(DType::F32),
        };
        if op == Op::Select {
            if let Val::Tensor(c) = &args[0] {
                let cs = self.ty(*c).shape.clone();
                match Self::broadcast_shapes(&cs, &common.shape) {
                    Some(s) => common.shape = s,
                    None => {
                        let ct = self.ty(*c).to_string();
                        self.report(errors::broadcast(span, name, &ct, &common.to_string()));
                        return Val::Error;
                    }
                }
            }
        }
        if op == Op::StopGradient && !common.dtype.is_float() {
            self.report(errors::stop_gradient_int(span, &common.to_string()));
            return Val::Error;
        }
        if op.info().dtypes == DTypes::Float && !common.dtype.is_float() {
            self.report(errors::float_needed(span, name, &common.to_string()));
            return Val::Error;
        }
        let mut operands = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let v = match a {
                Val::Tensor(t) => *t,
                _ => match self.as_tensor_like(a, &common, spans[i], name) {
                    Some(v) => v,
                    None => return Val::Error,
                },
            };
            operands.push(self.broadcast_to(v, &common.shape));
        }
        match self.func.build(op, operands, Attr::None, None) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, name, msg));
                Val::Error
            }
        }
    }

    /// Folds an elementwise op over static numbers.
    pub(super) fn fold(&mut self, op: Op, args: &[Val], span: Span) -> Val {
        if let Some(Val::Dim(d)) = args.iter().find(|a| matches!(a, Val::Dim(_))) {
            self.report(errors::symbolic_arith(span, d));
            return Val::Error;
        }
        let all_int = args.iter().all(|a| matches!(a, Val::Int(_) | Val::Bool(_)));
        let ints: Vec<i64> = args
            .iter()
            .map(|a| match a {
                Val::Int(i) => *i,
                Val::Bool(b) => i64::from(*b),
                _ => 0,
            })
            .collect();
        let fs: Vec<f64> = args
            .iter()
            .map(|a| match a {
                Val::Int(i) => *i as f64,
                Val::Float(f) => *f,
                Val::Bool(b) => f64::from(u8::from(*b)),
                _ => 0.0,
            })
            .collect();
        if all_int {
            let (a, b) = (ints[0], *ints.get(1).unwrap_or(&0));
            let r = match op {
                Op::Add => a.checked_add(b),
                Op::Sub => a.checked_sub(b),
                Op::Mul => a.checked_mul(b),
                Op::Neg => a.checked_neg(),
                Op::Abs => a.checked_abs(),
                Op::Sign => Some(a.signum()),
                Op::Max => Some(a.max(b)),
                Op::Min => Some(a.min(b)),
                Op::Div if b == 0 => {
                    self.report(errors::div_zero(span));
                    return Val::Error;
                }
                // Exact integer division stays an integer (`D / 2` is a size); otherwise a float.
                Op::Div if a % b == 0 => Some(a / b),
                Op::Pow if (0..=u32::MAX as i64).contains(&b) => a.checked_pow(b as u32),
                _ => None,
            };
            match (r, op) {
                (Some(v), _) => return Val::Int(v),
                (None, Op::Add | Op::Sub | Op::Mul | Op::Neg | Op::Abs | Op::Pow)
                    if !(op == Op::Pow && b < 0) =>
                {
                    self.report(errors::overflow(span));
                    return Val::Error;
                }
                _ => {}
            }
        }
        // Static floats are f64: the op table's definition, unrounded.
        let Some(v) = op.scalar(&fs, DType::F64) else {
            self.report(errors::op_rule(
                span,
                op.mnemonic(),
                format!("`{}` needs a tensor operand", op.mnemonic()),
            ));
            return Val::Error;
        };
        if op.info().class == Class::Compare {
            return Val::Bool(v != 0.0);
        }
        Val::Float(v)
    }
}
