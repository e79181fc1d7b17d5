"""calibench's built-in training methods, one plugin file each.

In a source checkout this is the top-level ``methods/`` folder; the wheel ships it as the
package ``calibench.methods``. calibench loads these files the same way as a user's plugin
folder (see :mod:`calibench.plugins`)."""
