//! Layers: inlining a call with its arguments bound, instance naming (`h1.w`), `param`
//! and `buffer` declarations with their initializers, and buffers' new values.

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
    /// A layer's header as written, and the parameters (trainable values) one call of
    /// it made, for hover.
    pub(super) fn layer_note(&self, def: &FnDef, params_before: usize) -> String {
        let header = crate::ide::header(def.span, self.defs.src);
        // Parameters have known shapes (`param_symbolic` otherwise).
        let count: u128 = self
            .func
            .params
            .get(params_before..)
            .unwrap_or(&[])
            .iter()
            .filter(|p| p.kind == ParamKind::Param)
            .map(|p| p.ty.shape.volume().0)
            .sum();
        let s = if count == 1 { "" } else { "s" };
        let digits = count.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{header}\n\n{grouped} trainable parameter{s} in this call")
    }

    pub(super) fn instantiate(
        &mut self,
        def: &'d FnDef,
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let pnames: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let Some(slots) = self.bind_args(&def.name.name, &pnames, args, span) else {
            return Val::Error;
        };
        // Error context: prelude errors go to the user's call; user layers get a label.
        let saved_site = self.site.clone();
        let pushed_call = def.span.src == USER && span.src == USER;
        if def.span.src == PRELUDE && span.src == USER {
            self.site = Some((span, def.name.name.clone()));
        }
        if pushed_call {
            self.calls.push((span, def.name.name.clone()));
        }
        let base = self
            .frames
            .last()
            .map(|f| f.stmt.clone())
            .unwrap_or_default();
        let params_before = self.func.params.len();
        self.frames
            .push(Frame::new(&def.name.name, base, None, params_before));
        let result = self.instantiate_body(def, slots, span);
        self.frames.pop();
        if pushed_call {
            self.calls.pop();
        }
        self.site = saved_site;
        result
    }

    pub(super) fn instantiate_body(
        &mut self,
        def: &'d FnDef,
        slots: Vec<Option<(Val, Span)>>,
        span: Span,
    ) -> Val {
        let mut scope = Scope::new();
        for (p, slot) in def.params.iter().zip(slots) {
            let (v, vspan) = match slot {
                Some(s) => s,
                None => match &p.default {
                    Some(d) => (self.eval(&mut scope, d), d.span),
                    None => {
                        self.report(errors::missing_arg(span, &def.name.name, &p.name.name));
                        return Val::Error;
                    }
                },
            };
            let v = match &p.ty {
                Some(ty) => self.bind_typed(&mut scope, &p.name.name, ty, v, vspan),
                None => v,
            };
            if matches!(v, Val::Error) {
                return Val::Error;
            }
            self.note_value(p.name.span, &p.name.name, &v);
            if let (Val::Tensor(t), Some(f)) = (&v, self.frames.last_mut()) {
                f.inputs.push((p.name.name.clone(), *t));
            }
            scope.insert(p.name.name.clone(), v);
        }
        let ret = self.body(&mut scope, &def.body);
        self.collect_buffer_updates(&scope);
        let Some(ret) = ret else {
            return Val::Error;
        };
        if let (Some(ann), Some(rspan)) = (&def.ret, def.body.last().map(|s| s.span())) {
            self.check_return(&mut scope, ann, &ret, rspan);
        }
        ret
    }

    /// Records the values the current instance's buffer names hold at its end: a buffer
    /// assigned in the layer (`running_mean = ...`) gets that value as its update.
    pub fn collect_buffer_updates(&mut self, scope: &Scope) {
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        for (name, b) in std::mem::take(&mut frame.buffers) {
            let Some(Val::Tensor(v)) = scope.get(&name.name) else {
                continue;
            };
            if *v == b {
                continue;
            }
            let (bt, vt) = (self.func.ty(b).clone(), self.func.ty(*v).clone());
            if bt != vt {
                let d =
                    errors::buffer_type(name.span, &name.name, &bt.to_string(), &vt.to_string());
                self.report(d);
                continue;
            }
            self.buffer_updates.push((b, *v));
        }
    }

    pub(super) fn set_stmt(&mut self, name: &str) {
        if let Some(f) = self.frames.last_mut() {
            f.stmt = name.to_string();
        }
    }

    /// The dotted path of the current layer instance, allocated on first use so only
    /// layers with parameters take names.
    pub(super) fn instance_path(&mut self) -> String {
        for i in 0..self.frames.len() {
            if self.frames[i].path.is_some() {
                continue;
            }
            let parent = self.frames[i - 1].path.clone().unwrap_or_default();
            let base = if parent.is_empty() {
                self.frames[i].base.clone()
            } else {
                format!("{parent}.{}", self.frames[i].base)
            };
            let mut path = base.clone();
            let mut n = 2;
            while !self.used.insert(path.clone()) {
                path = format!("{base}_{n}");
                n += 1;
            }
            self.frames[i].path = Some(path);
        }
        self.frames
            .last()
            .and_then(|f| f.path.clone())
            .unwrap_or_default()
    }

    pub(super) fn param(
        &mut self,
        scope: &mut Scope,
        kind: ParamKind,
        name: &Ident,
        ty: &TypeAnn,
        init: Option<&Expr>,
        span: Span,
    ) -> Val {
        let Some(t) = self.eval_type(scope, ty) else {
            return Val::Error;
        };
        if t.shape.dims().iter().any(|d| d.known().is_none()) {
            self.report(errors::param_symbolic(ty.span(), &t.to_string()));
            return Val::Error;
        }
        let init_val = match init {
            Some(e) => self.eval(scope, e),
            None => Val::Init("zeros".into(), vec![]),
        };
        let init_span = init.map_or(span, |e| e.span);
        let Some(resolved) = self.resolve_init(&init_val, &t, init_span) else {
            return Val::Error;
        };
        let prefix = self.instance_path();
        let mut full = if prefix.is_empty() {
            name.name.clone()
        } else {
            format!("{prefix}.{}", name.name)
        };
        if prefix.is_empty() {
            let base = full.clone();
            let mut n = 2;
            while !self.used.insert(full.clone()) {
                full = format!("{base}_{n}");
                n += 1;
            }
        }
        Val::Tensor(self.func.add_param(kind, full, t, resolved))
    }

    /// Turns an initializer value into a concrete distribution for a parameter of type `t`.
    /// Fans follow PyTorch: rank 2 is `[in, out]` (our dense layout); rank >= 3 is
    /// `[out, in, k...]` (convolution); rank 1 uses its size for both.
    pub fn resolve_init(&mut self, v: &Val, t: &TensorType, span: Span) -> Option<Init> {
        let dims: Vec<f64> = t
            .shape
            .dims()
            .iter()
            .map(|d| d.known().unwrap_or(1) as f64)
            .collect();
        let (fan_in, fan_out) = match dims.as_slice() {
            [] => (1.0, 1.0),
            [n] => (*n, *n),
            [i, o] => (*i, *o),
            [o, i, rest @ ..] => {
                let k: f64 = rest.iter().product();
                (i * k, o * k)
            }
        };
        let (name, args) = match v {
            Val::Init(n, a) => (n.as_str(), a.as_slice()),
            Val::Int(i) => return Some(Init::Fill(*i as f64)),
            Val::Float(f) => return Some(Init::Fill(*f)),
            Val::Error => return None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "an initializer", &d));
                return None;
            }
        };
        let arg = |k: &str| {
            args.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        Some(match name {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "fill" => Init::Fill(arg("value")),
            "normal" => Init::Normal {
                mean: arg("mean"),
                std: arg("std"),
            },
            "uniform" => Init::Uniform {
                lo: arg("lo"),
                hi: arg("hi"),
            },
            "xavier_uniform" | "glorot_uniform" => {
                let a = arg("gain") * (6.0 / (fan_in + fan_out)).sqrt();
                Init::Uniform { lo: -a, hi: a }
            }
            "xavier_normal" | "glorot_normal" => Init::Normal {
                mean: 0.0,
                std: arg("gain") * (2.0 / (fan_in + fan_out)).sqrt(),
            },
            "he_uniform" | "kaiming_uniform" => {
                let a = arg("gain") * (3.0 / fan_in).sqrt();
                Init::Uniform { lo: -a, hi: a }
            }
            // PyTorch's default for nn.Linear and nn.Conv2d weights.
            "fan_in_uniform" => Init::Uniform {
                lo: -1.0 / fan_in.sqrt(),
                hi: 1.0 / fan_in.sqrt(),
            },
            "he_normal" | "kaiming_normal" => Init::Normal {
                mean: 0.0,
                std: arg("gain") / fan_in.sqrt(),
            },
            _ => unreachable!("initializer names come from INITIALIZERS"),
        })
    }

    pub(super) fn initializer(&mut self, name: &str, given: &[(String, f64)], _span: Span) -> Val {
        let (_, params) = INITIALIZERS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("caller checked");
        let args = params
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    given.iter().find(|(g, _)| g == k).map_or(*d, |(_, v)| *v),
                )
            })
            .collect();
        Val::Init(name.to_string(), args)
    }

    pub(super) fn init_call(
        &mut self,
        name: &str,
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let (_, params) = INITIALIZERS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("caller checked");
        let pnames: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        let Some(slots) = self.bind_args(name, &pnames, args, span) else {
            return Val::Error;
        };
        let mut given = Vec::new();
        for (k, slot) in pnames.iter().zip(slots) {
            match slot {
                Some((Val::Int(i), _)) => given.push((k.to_string(), i as f64)),
                Some((Val::Float(f), _)) => given.push((k.to_string(), f)),
                Some((Val::Error, _)) => return Val::Error,
                Some((other, s)) => {
                    let d = self.describe(&other);
                    self.report(errors::kind(s, "a number", &d));
                    return Val::Error;
                }
                None if params.iter().any(|(p, d)| p == k && d.is_nan()) => {
                    self.report(errors::missing_arg(span, name, k));
                    return Val::Error;
                }
                None => {}
            }
        }
        self.initializer(name, &given, span)
    }
}
