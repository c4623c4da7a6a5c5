"""White-box attacks: the judge's weights are open; crafted offline on its gradients, no query sent."""
