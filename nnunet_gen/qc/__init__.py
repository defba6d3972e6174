"""Quality-control figures and analyses people look at: slice montages, GBA copies, tumour intensity distributions."""
