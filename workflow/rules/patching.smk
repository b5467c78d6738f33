# Rules of the patching stage.
