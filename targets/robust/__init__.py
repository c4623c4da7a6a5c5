"""What each training batch minimises (`target.train.adversarial`): the natural loss, or an adversarial one (robust
training, the operator's first alternative to hiding the weights). One module each; `objective_for` picks it."""
