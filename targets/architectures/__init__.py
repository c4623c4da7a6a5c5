"""Network architectures a judge or surrogate is trained with (`target.arch`, `surrogate.arch`): one module each,
built by `_target_` like every other door."""
