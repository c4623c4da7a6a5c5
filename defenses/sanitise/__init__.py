"""Sanitisers (`sanitise=`): what the operator does to contributed training data before it trusts the judge trained on
it. One module each, built by `_target_`; each retrains (or fine-tunes) the judge on what it keeps."""
