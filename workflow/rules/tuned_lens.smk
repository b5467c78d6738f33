# Rules of the tuned_lens stage.
