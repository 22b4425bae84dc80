//! Configuration calls of train blocks: optimizer rules, schedules and data sources
//! with static, checked arguments.

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
    pub(super) fn static_of(&mut self, v: &Val, span: Span) -> Option<Static> {
        Some(match v {
            Val::Int(i) => Static::Int(*i),
            Val::Float(f) => Static::Float(*f),
            Val::Bool(b) => Static::Bool(*b),
            Val::Str(s) => Static::Str(s.clone()),
            Val::List(xs) => Static::List(
                xs.iter()
                    .map(|x| self.static_of(x, span))
                    .collect::<Option<_>>()?,
            ),
            Val::Error => return None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a constant", &d));
                return None;
            }
        })
    }

    pub(super) fn config_call(
        &mut self,
        name: &str,
        params: &[&ParamDef],
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let pnames: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
        let Some(slots) = self.bind_args(name, &pnames, args, span) else {
            return Val::Error;
        };
        let mut out = Vec::new();
        let mut scope = Scope::new();
        for (p, slot) in params.iter().zip(slots) {
            let (v, s) = match slot {
                Some(vs) => vs,
                None => match &p.default {
                    Some(d) => (self.eval(&mut scope, d), d.span),
                    None => {
                        self.report(errors::missing_arg(span, name, &p.name.name));
                        return Val::Error;
                    }
                },
            };
            let Some(st) = self.static_of(&v, s) else {
                return Val::Error;
            };
            scope.insert(p.name.name.clone(), v);
            out.push((p.name.name.clone(), st));
        }
        Val::Call(CallSpec {
            name: name.to_string(),
            args: out,
        })
    }

    pub(super) fn static_call(
        &mut self,
        name: &str,
        kws: &[(&str, names::ArgKind)],
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let keys: Vec<&str> = kws.iter().map(|(k, _)| *k).collect();
        let Some(slots) = self.bind_args(name, &keys, args, span) else {
            return Val::Error;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (&(k, kind), slot) in kws.iter().zip(slots) {
            if let Some((v, s)) = slot {
                let Some(st) = self.static_of(&v, s) else {
                    return Val::Error;
                };
                if !arg_fits(kind, &st) {
                    let found = self.describe(&v);
                    self.report(errors::setting_value(
                        s,
                        &format!("{name}(..., {k})"),
                        kind.describe(),
                        &found,
                    ));
                    ok = false;
                }
                out.push((k.to_string(), st));
            }
        }
        if !ok {
            return Val::Error;
        }
        let on = |k: &str| out.iter().any(|(n, v)| n == k && *v == Static::Bool(true));
        if on("standardize") && on("min_max") {
            self.report(errors::setting_value(
                span,
                &format!("{name}(..., standardize, min_max)"),
                "one normalization, not both",
                "both true",
            ));
            return Val::Error;
        }
        Val::Call(CallSpec {
            name: name.to_string(),
            args: out,
        })
    }
}

fn arg_fits(kind: names::ArgKind, v: &Static) -> bool {
    use names::ArgKind as K;
    let num = match v {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        _ => None,
    };
    match kind {
        K::PositiveInt => matches!(v, Static::Int(i) if *i >= 1),
        K::Count => matches!(v, Static::Int(i) if *i >= 0),
        K::Positive => num.is_some_and(|x| x > 0.0 && x.is_finite()),
        K::NonNegative => num.is_some_and(|x| x >= 0.0 && x.is_finite()),
        K::Fraction => num.is_some_and(|x| (0.0..1.0).contains(&x)),
        K::Text => matches!(v, Static::Str(_)),
        K::Bool => matches!(v, Static::Bool(_)),
    }
}
