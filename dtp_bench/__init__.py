"""dtp_bench: an experiment runner for backprop alternatives (BP, FA, DFA, TP, DTP, SDTP, AO-SDTP,
FW-DTP, DRL, L-DRL) on MNIST, Fashion-MNIST, CIFAR-10/100 and ImageNet32."""

__version__ = "0.1.0"
