`timescale 1ns/1ps
// repq-hw reference RTL: integer softmax of one row, exp2 LUT-and-shift form (docs/ops/softmax.md).
//
//   LOAD : the N logits x_j (int32) arrive one per clock; m = max_j x_j
//   EXP  : one element per clock:
//            t = rshift_round((x_j - m) * M, s)      (x_j - m) in [-(2^32-1), 0], product < 2^63
//            u = -t;  n = u >> F;  f = u & (2^F - 1)
//            e_j = rshift_round(LUT[f], min(n, 62))  LUT: 2^F entries of E+1 bits (written through lut_*)
//            S += e_j
//   DIV  : P_j = round_div(e_j << P, S)  -- sequential divider, DIV_ITER = E + P + 1 clocks per element
//   out_valid pulses once per element, in order.
// All three rounding steps use `mode` (the LUT entries themselves are integers from the IR constant).
module rq_softmax_row #(
    parameter integer NMAX     = 256,   // longest row
    parameter integer F        = 10,    // frac_bits: LUT index bits
    parameter integer P        = 16,    // out_bits
    parameter integer DIV_ITER = 39     // E + P + 1
) (
    input  wire               clk,
    input  wire               rst,
    // LUT write port (the exp2 table of the IR, 2^F entries)
    input  wire               lut_we,
    input  wire [F-1:0]       lut_addr,
    input  wire [31:0]        lut_data,
    // attributes
    input  wire [31:0]        mult,
    input  wire [5:0]         shift,
    input  wire [1:0]         mode,
    input  wire [15:0]        n_len,
    // stream
    input  wire               in_valid,
    input  wire signed [31:0] x,
    output reg                out_valid,
    output reg  [31:0]        p_out,
    output wire               busy
);
    localparam [2:0] S_IDLE = 3'd0, S_LOAD = 3'd1, S_EXP = 3'd2, S_DIV = 3'd3, S_WAIT = 3'd4;
    reg [31:0] lut [0:(1<<F)-1];
    reg signed [31:0] xbuf [0:NMAX-1];
    reg [31:0] ebuf [0:NMAX-1];
    reg [2:0]  state;
    reg [15:0] i;
    reg signed [31:0] mx;
    reg [63:0] sum;
    assign busy = (state != S_IDLE) && (state != S_LOAD || i != 16'd0);

    always @(posedge clk) if (lut_we) lut[lut_addr] <= lut_data;

    // EXP datapath (combinational on element i)
    wire signed [63:0] diff = $signed({{32{xbuf[i][31]}}, xbuf[i]}) - $signed({{32{mx[31]}}, mx});
    wire signed [63:0] prod = diff * $signed({32'd0, mult});
    wire signed [63:0] t;
    rq_rshift_round u_t (.x(prod), .s(shift), .mode(mode), .y(t));
    wire [63:0] u     = -t;
    wire [63:0] nsh   = u >> F;
    wire [F-1:0] fidx = u[F-1:0];
    wire [5:0]  nclip = (nsh > 64'd62) ? 6'd62 : nsh[5:0];
    wire signed [63:0] e;
    rq_rshift_round u_e (.x({32'd0, lut[fidx]}), .s(nclip), .mode(mode), .y(e));

    // DIV
    reg div_start;
    wire div_busy, div_done;
    wire signed [63:0] div_q;
    rq_div_round #(.ITER(DIV_ITER)) u_div (.clk(clk), .rst(rst), .start(div_start),
        .num($signed({32'd0, ebuf[i]}) <<< P), .den(sum), .mode(mode), .busy(div_busy), .done(div_done),
        .result(div_q));

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            out_valid <= 1'b0;
            div_start <= 1'b0;
            i <= 16'd0;
        end else begin
            out_valid <= 1'b0;
            div_start <= 1'b0;
            case (state)
                S_IDLE, S_LOAD: begin
                    if (in_valid) begin
                        xbuf[i] <= x;
                        mx <= (i == 16'd0 || x > mx) ? x : mx;
                        if (i == n_len - 16'd1) begin
                            i <= 16'd0;
                            sum <= 64'd0;
                            state <= S_EXP;
                        end else begin
                            i <= i + 16'd1;
                            state <= S_LOAD;
                        end
                    end
                end
                S_EXP: begin
                    ebuf[i] <= e[31:0];
                    sum <= sum + e;
                    if (i == n_len - 16'd1) begin
                        i <= 16'd0;
                        state <= S_DIV;
                    end else
                        i <= i + 16'd1;
                end
                S_DIV: begin
                    div_start <= 1'b1;
                    state <= S_WAIT;
                end
                S_WAIT: begin
                    if (div_done) begin
                        out_valid <= 1'b1;
                        p_out <= div_q[31:0];
                        if (i == n_len - 16'd1) begin
                            i <= 16'd0;
                            state <= S_IDLE;
                        end else begin
                            i <= i + 16'd1;
                            state <= S_DIV;
                        end
                    end
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule
