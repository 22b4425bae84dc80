//! Type annotations: binding a typed parameter's dimension names from its argument,
//! rendering and evaluating annotations, and checking a declared return type.

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
    /// Checks a value against a declared parameter type, binding the type's free
    /// dimension names.
    pub(super) fn bind_typed(
        &mut self,
        scope: &mut Scope,
        pname: &str,
        ty: &TypeAnn,
        v: Val,
        vspan: Span,
    ) -> Val {
        if matches!(v, Val::Error) {
            return v;
        }
        match ty {
            TypeAnn::Scalar(kind) => match (kind.name.as_str(), &v) {
                ("int", Val::Int(_)) | ("bool", Val::Bool(_)) | ("float", Val::Float(_)) => v,
                ("float", Val::Int(i)) => Val::Float(*i as f64),
                ("int", Val::Dim(_)) => v,
                (k, _) => {
                    let d = self.describe(&v);
                    let what = match k {
                        "int" => "an integer",
                        "float" => "a float",
                        _ => "a boolean",
                    };
                    self.report(errors::kind(vspan, what, &d));
                    Val::Error
                }
            },
            TypeAnn::Tensor { dtype, dims, .. } => {
                let Val::Tensor(t) = v else {
                    let d = self.describe(&v);
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::kind(vspan, &format!("a tensor {expected}"), &d));
                    return Val::Error;
                };
                let actual = self.ty(t).clone();
                if actual.rank() != dims.len() {
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::rank(
                        vspan,
                        pname,
                        &format!("{} ({expected})", dims.len()),
                        &format!("{} ({actual})", actual.rank()),
                    ));
                    return Val::Error;
                }
                let dt = DType::from_name(&dtype.name);
                let mut ok = dt == Some(actual.dtype);
                for (d, a) in dims.iter().zip(actual.shape.dims()) {
                    let av = match a {
                        Dim::Known(n) => Val::Int(*n as i64),
                        Dim::Sym(s) => Val::Dim(s.clone()),
                    };
                    if let ExprKind::Name(n) = &d.kind {
                        match scope.get(n) {
                            None => {
                                scope.insert(n.clone(), av);
                                continue;
                            }
                            Some(bound) if !same_dim(bound, &av) && ok => {
                                let first = self.describe_dim(bound);
                                self.report(errors::dim_binding(vspan, n, &first, &a.to_string()));
                                return Val::Error;
                            }
                            _ => continue,
                        }
                    }
                    let want = self.eval(scope, d);
                    if !same_dim(&want, &av) {
                        ok = false;
                    }
                }
                if !ok {
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::arg_type(
                        vspan,
                        pname,
                        &expected,
                        &actual.to_string(),
                    ));
                    return Val::Error;
                }
                Val::Tensor(t)
            }
        }
    }

    pub(super) fn describe_dim(&self, v: &Val) -> String {
        match v {
            Val::Int(i) => i.to_string(),
            Val::Dim(d) => d.clone(),
            other => self.describe(other),
        }
    }

    /// Renders a type annotation with the dimensions known so far substituted.
    pub(super) fn render_ann(&mut self, scope: &mut Scope, ty: &TypeAnn) -> String {
        match ty {
            TypeAnn::Scalar(k) => k.name.clone(),
            TypeAnn::Tensor { dtype, dims, .. } => {
                let parts: Vec<String> = dims
                    .iter()
                    .map(|d| match &d.kind {
                        ExprKind::Name(n) if !scope.contains_key(n) => n.clone(),
                        _ => {
                            let saved = self.errors.len();
                            let v = self.eval(scope, d);
                            self.errors.truncate(saved);
                            self.describe_dim(&v)
                        }
                    })
                    .collect();
                format!("{}[{}]", dtype.name, parts.join(", "))
            }
        }
    }

    /// Evaluates a tensor type annotation in a scope where all its names are bound.
    pub fn eval_type(&mut self, scope: &mut Scope, ty: &TypeAnn) -> Option<TensorType> {
        let TypeAnn::Tensor { dtype, dims, .. } = ty else {
            let d = ty.span();
            self.report(errors::kind(
                d,
                "a tensor type like f32[B, 64]",
                "a scalar type",
            ));
            return None;
        };
        let Some(dt) = DType::from_name(&dtype.name) else {
            if !self.errors.iter().any(|e| e.span() == dtype.span) {
                self.report(errors::unknown_type(dtype.span, &dtype.name));
            }
            return None;
        };
        let mut out = Vec::new();
        for d in dims {
            match self.eval(scope, d) {
                Val::Int(n) if n > 0 => out.push(Dim::Known(n as u64)),
                Val::Dim(s) => out.push(Dim::Sym(s)),
                Val::Error => return None,
                other => {
                    let text = match other {
                        Val::Int(n) => n.to_string(),
                        o => self.describe(&o),
                    };
                    self.report(errors::bad_dim(d.span, &text));
                    return None;
                }
            }
        }
        let t = TensorType::new(dt, Shape(out));
        if let Some(why) = nnc_ir::limits::too_large(&t) {
            self.report(errors::too_large(ty.span(), why));
            return None;
        }
        Some(t)
    }

    pub fn check_return(&mut self, scope: &mut Scope, ann: &TypeAnn, ret: &Val, rspan: Span) {
        let Val::Tensor(t) = ret else {
            if !matches!(ret, Val::Error) {
                let d = self.describe(ret);
                let expected = self.render_ann(scope, ann);
                self.report(errors::return_type(rspan, ann.span(), &expected, &d));
            }
            return;
        };
        let actual = self.ty(*t).clone();
        let saved = self.errors.len();
        let expected = self.eval_type(scope, ann);
        self.errors.truncate(saved);
        if expected.as_ref() != Some(&actual) {
            let shown = self.render_ann(scope, ann);
            self.report(errors::return_type(
                rspan,
                ann.span(),
                &shown,
                &actual.to_string(),
            ));
        }
    }
}

fn same_dim(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Dim(x), Val::Dim(y)) => x == y,
        (Val::Error, _) | (_, Val::Error) => true,
        _ => false,
    }
}
