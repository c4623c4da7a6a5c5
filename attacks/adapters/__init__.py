"""The attack libraries over gavel's handles: ART (`art`) and foolbox (`foolbox`)."""
