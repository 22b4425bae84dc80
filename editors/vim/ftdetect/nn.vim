" nnc's model files
autocmd BufRead,BufNewFile *.nn setfiletype nn
