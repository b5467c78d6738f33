# Rules of the lens stage.
