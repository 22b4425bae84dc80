//! What each function of a checked model is for, and the one place their names are
//! spelled: a model `M` has `@M` (the forward pass), and with a train block `@M.loss`
//! (training loss and output, then the buffers' new values), `@M.eval` (the loss in
//! inference mode, for models that read `training`), `@M.grad` (the loss function
//! followed by its derivative) and `@M.update` (the optimizer rule over one flat
//! parameter). Everything that needs one of them asks here.

/// A function's role in a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `@M`: inputs to output.
    Forward,
    /// `@M.loss`: inputs and labels to (loss, output, new buffer values...).
    Loss,
    /// `@M.eval`: as `Loss`, in inference mode.
    Eval,
    /// `@M.grad`: as `Loss`, then one gradient per trained parameter.
    Grad,
    /// `@M.update`: the optimizer rule, `(w, g, lr, step) -> (w', states'...)`.
    Update,
}

impl Role {
    const SUFFIXES: [(Role, &'static str); 4] = [
        (Role::Loss, ".loss"),
        (Role::Eval, ".eval"),
        (Role::Grad, ".grad"),
        (Role::Update, ".update"),
    ];

    /// The name of model `model`'s function of this role.
    pub fn name(self, model: &str) -> String {
        match Role::SUFFIXES.iter().find(|(r, _)| *r == self) {
            Some((_, s)) => format!("{model}{s}"),
            None => model.to_string(),
        }
    }

    /// The model and role a function name stands for.
    pub fn of(name: &str) -> (&str, Role) {
        for (r, s) in Role::SUFFIXES {
            if let Some(m) = name.strip_suffix(s) {
                return (m, r);
            }
        }
        (name, Role::Forward)
    }
}

/// Where the values a `Loss`, `Eval` or `Grad` function returns are: the loss, the
/// model's output, one new value per buffer, then (for `Grad`) one gradient per trained
/// parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// Buffers the loss returns new values of.
    pub buffers: usize,
}

impl Outputs {
    /// The scalar loss.
    pub const LOSS: usize = 0;
    /// The model's output.
    pub const OUTPUT: usize = 1;

    /// Buffer `k`'s new value.
    pub fn buffer(self, k: usize) -> usize {
        2 + k
    }

    /// The first gradient (of the first trained parameter).
    pub fn gradients(self) -> usize {
        2 + self.buffers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [
            Role::Forward,
            Role::Loss,
            Role::Eval,
            Role::Grad,
            Role::Update,
        ] {
            assert_eq!(Role::of(&r.name("Mlp")), ("Mlp", r));
        }
    }
}
